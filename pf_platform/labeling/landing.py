"""Spread a crowd-labeling dataset over landing days.

The bundled datasets (``item_id,agent_id,label``) carry no timestamps, so the demo assigns each
label a day itself, the same way on every run:

* items are numbered in order of their first appearance in ``answers.csv``; item ``i`` of ``n``
  lands on day ``floor(i * days / n)``, so every label of one item lands on the same day and the
  day's consensus sees all of them;
* a label's ``record_id`` is ``<dataset>-<row>``, its 1-based row number in ``answers.csv``;
* its ``submitted_at`` is the day's midnight UTC plus its rank within the day in seconds;
* day ``d`` is written as CSV, JSON lines or Parquet for ``d % 3`` = 0, 1, 2, so the demo reads
  all three formats.

The task's label set is the set of gold labels in ``truth.csv``.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from importlib import resources
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

BUNDLED_DATASETS = ("face-sentiment", "dog-breeds", "product-matching")
FORMATS = ("csv", "jsonl", "parquet")
COLUMNS = ("record_id", "item_id", "agent_id", "label", "submitted_at")


@dataclass(frozen=True)
class Dataset:
    """A crowd-labeling dataset in the bundled format."""

    name: str
    answers: Path
    label_set: tuple[str, ...]


def resolve_dataset(name_or_path: str) -> Dataset:
    """Finds a bundled dataset by name, or reads a folder holding answers.csv and truth.csv.

    Raises:
        FileNotFoundError: neither a bundled name nor a folder with both files.
    """
    if name_or_path in BUNDLED_DATASETS:
        folder = Path(str(resources.files("pf_platform.datasets") / name_or_path))
    else:
        folder = Path(name_or_path)
    answers, truth = folder / "answers.csv", folder / "truth.csv"
    if not (answers.is_file() and truth.is_file()):
        raise FileNotFoundError(
            f"{name_or_path!r} is not a bundled dataset ({', '.join(BUNDLED_DATASETS)}) "
            "nor a folder holding answers.csv and truth.csv"
        )
    with truth.open(newline="", encoding="utf-8") as handle:
        labels = sorted({row["label"] for row in csv.DictReader(handle)})
    return Dataset(name=folder.name, answers=answers, label_set=tuple(labels))


def spread_over_days(
    dataset: Dataset, landing_root: Path, start: date, days: int = 7
) -> list[date]:
    """Writes the dataset's labels into ``<landing_root>/<yyyy-mm-dd>/`` files, one per day.

    Re-running writes the same bytes to the same files, so landing the same dataset twice never
    adds rows.

    Returns:
        The days written, in order.
    """
    with dataset.answers.open(newline="", encoding="utf-8") as handle:
        answers = list(csv.DictReader(handle))
    item_order: dict[str, int] = {}
    for row in answers:
        item_order.setdefault(row["item_id"], len(item_order))
    item_count = len(item_order)

    per_day: list[list[dict[str, str]]] = [[] for _ in range(days)]
    for number, row in enumerate(answers, start=1):
        day_index = item_order[row["item_id"]] * days // item_count
        per_day[day_index].append(
            {
                "record_id": f"{dataset.name}-{number:06d}",
                "item_id": row["item_id"],
                "agent_id": row["agent_id"],
                "label": row["label"],
            }
        )

    written = []
    for day_index, rows in enumerate(per_day):
        day = start + timedelta(days=day_index)
        midnight = datetime.combine(day, time(0), tzinfo=UTC)
        for rank, row in enumerate(rows):
            stamp = midnight + timedelta(seconds=rank)
            row["submitted_at"] = stamp.isoformat().replace("+00:00", "Z")
        folder = landing_root / day.isoformat()
        folder.mkdir(parents=True, exist_ok=True)
        _write(folder / f"{dataset.name}.{FORMATS[day_index % 3]}", rows)
        written.append(day)
    return written


def _write(path: Path, rows: list[dict[str, str]]) -> None:
    for other in FORMATS:
        stale = path.with_suffix(f".{other}")
        if stale != path and stale.exists():
            stale.unlink()
    tmp = path.with_name(f".{path.name}.tmp")
    if path.suffix == ".csv":
        with tmp.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=COLUMNS, lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
    elif path.suffix == ".jsonl":
        with tmp.open("w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row, sort_keys=True) + "\n")
    else:
        table = pa.table({column: [row[column] for row in rows] for column in COLUMNS})
        pq.write_table(table, tmp)
    tmp.replace(path)
