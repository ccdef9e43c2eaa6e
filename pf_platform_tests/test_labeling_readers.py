"""Landing files become bronze rows; what cannot be read becomes a row that says why."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pf_platform.labeling import readers
from pf_platform.labeling.landing import resolve_dataset, spread_over_days
from pf_platform.labeling.readers import MAX_LINE_BYTES, read_landing_folder


def _rows(folder: Path) -> list[dict]:
    return read_landing_folder(folder).to_pylist()


def test_dataset_spreads_over_seven_days_in_three_formats(tmp_path):
    dataset = resolve_dataset("face-sentiment")
    days = spread_over_days(dataset, tmp_path, date(2026, 11, 1))

    assert days[0] == date(2026, 11, 1) and days[-1] == date(2026, 11, 7)
    suffixes = [next((tmp_path / d.isoformat()).iterdir()).suffix for d in days]
    assert suffixes == [".csv", ".jsonl", ".parquet", ".csv", ".jsonl", ".parquet", ".csv"]
    per_day = [_rows(tmp_path / d.isoformat()) for d in days]
    assert sum(len(rows) for rows in per_day) == 5242
    record_ids = [row["record_id"] for rows in per_day for row in rows]
    assert len(set(record_ids)) == 5242
    # Every label of an item lands on one day.
    item_days = {}
    for index, rows in enumerate(per_day):
        for row in rows:
            assert item_days.setdefault(row["item_id"], index) == index
    assert all(row["read_error"] is None for rows in per_day for row in rows)
    assert dataset.label_set == ("angry", "happy", "neutral", "sad")


def test_landing_twice_writes_identical_files(tmp_path):
    dataset = resolve_dataset("dog-breeds")
    spread_over_days(dataset, tmp_path, date(2026, 11, 1))
    first = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    spread_over_days(dataset, tmp_path, date(2026, 11, 1))
    second = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert first == second


def test_unknown_dataset_is_a_clear_error(tmp_path):
    try:
        resolve_dataset(str(tmp_path / "nope"))
    except FileNotFoundError as exc:
        assert "answers.csv and truth.csv" in str(exc)
    else:
        raise AssertionError("expected FileNotFoundError")


def test_csv_rows_and_unreadable_lines(tmp_path):
    (tmp_path / "a.csv").write_bytes(
        b"record_id,item_id,agent_id,label\n"
        b"r1,i1,agent_1,happy\n"
        b"r2,i1,agent_\xff\xfe,happy\n"
        b"r3,i1,agent_3\n" + b"r4,i1,agent_4," + b"x" * (MAX_LINE_BYTES + 10) + b"\n"
    )
    rows = _rows(tmp_path)

    assert [row["source_line"] for row in rows] == [2, 3, 4, 5]
    assert rows[0]["agent_id"] == "agent_1" and rows[0]["read_error"] is None
    assert rows[0]["confidence"] is None
    assert rows[1]["read_error"] == "a.csv:3: not valid UTF-8 at byte 12"
    assert "\\xff" in rows[1]["raw"]
    assert rows[2]["read_error"] == "a.csv:4: expected 4 fields, found 3"
    assert rows[3]["read_error"].startswith("a.csv:5: line is 1,048,600 bytes")
    assert len(rows[3]["raw"]) <= 512


def test_json_lines_keep_literal_text(tmp_path):
    lines = [
        '{"record_id": "r1", "agent_id": "a", "item_id": "i", "label": "sad", "confidence": 1.7}',
        '{"record_id": "r2", "agent_id": "a", "item_id": "i", "label": "sad", "confidence": NaN}',
        '{"record_id": "r3", "agent_id": "a", "item_id": "i", "label": "sad", "confidence": "high"}',
        "[1, 2]",
        "{not json",
    ]
    (tmp_path / "b.jsonl").write_text("\n".join(lines) + "\n")
    rows = _rows(tmp_path)

    assert [row["confidence"] for row in rows[:3]] == ["1.7", "NaN", "high"]
    assert rows[3]["read_error"] == "b.jsonl:4: a JSON list, not an object"
    assert rows[4]["read_error"].startswith("b.jsonl:5: not JSON")


def test_empty_unknown_and_broken_files_become_one_row_each(tmp_path):
    (tmp_path / "empty.csv").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 this is not parquet")
    (tmp_path / "_SUCCESS").write_text("")
    rows = _rows(tmp_path)

    errors = {row["source_file"]: row["read_error"] for row in rows}
    assert set(errors) == {"empty.csv", "notes.txt", "broken.parquet"}
    assert errors["empty.csv"] == "empty.csv: empty file"
    assert errors["notes.txt"] == "notes.txt: unsupported file type '.txt'"
    assert errors["broken.parquet"].startswith("broken.parquet: not a readable Parquet file")
    assert all(row["source_line"] == 0 for row in rows)


def test_parquet_values_become_text(tmp_path):
    table = pa.table(
        {
            "record_id": ["r1", "r2"],
            "agent_id": ["a", None],
            "item_id": ["i", "i"],
            "label": ["sad", "happy"],
            "confidence": pa.array([0.25, float("nan")], pa.float64()),
        }
    )
    pq.write_table(table, tmp_path / "c.parquet")
    rows = _rows(tmp_path)

    assert [row["confidence"] for row in rows] == ["0.25", "nan"]
    assert rows[1]["agent_id"] is None
    assert [row["source_line"] for row in rows] == [1, 2]


def test_missing_column_lands_as_null(tmp_path):
    (tmp_path / "d.jsonl").write_text(json.dumps({"record_id": "r1", "agent_id": "a"}) + "\n")
    (row,) = _rows(tmp_path)
    assert row["label"] is None and row["item_id"] is None and row["read_error"] is None


def test_byte_order_mark_and_folders(tmp_path):
    (tmp_path / "bom.csv").write_bytes(b"\xef\xbb\xbfrecord_id,agent_id\r\nr1,a\r\n")
    (tmp_path / "bom.jsonl").write_bytes(b'\xef\xbb\xbf{"record_id": "r2", "agent_id": "b"}\n')
    (tmp_path / "nested").mkdir()
    (tmp_path / "nested" / "x.csv").write_text("record_id\nr3\n")
    rows = _rows(tmp_path)

    assert [(row["record_id"], row["agent_id"]) for row in rows[:2]] == [("r1", "a"), ("r2", "b")]
    assert rows[2]["source_file"] == "nested"
    assert rows[2]["read_error"] == "nested: a folder; landing files must lie in the day folder"


@pytest.mark.parametrize("block_bytes", [16, readers.CSV_BLOCK_BYTES])
def test_csv_in_blocks_keeps_line_order_values_and_reasons(tmp_path, monkeypatch, block_bytes):
    # 16-byte blocks hold about one line each: every kind of line meets a block boundary.
    monkeypatch.setattr(readers, "CSV_BLOCK_BYTES", block_bytes)
    (tmp_path / "e.csv").write_bytes(
        b"record_id,label,label\r\n"
        b"r1,x,happy\r\n"
        b"\r\n"
        b" \t \n"
        b'r2,"a,b",sad\n'
        b"r3,\xff,sad\n"
        b"r4,only\n"
        b"r5,,neutral\n"
        b"r6,\xc3\xa9,NA\n"
        b"r7,y," + b"z" * 40 + b"\n"
        b"r8,y,last"
    )
    monkeypatch.setattr(readers, "MAX_LINE_BYTES", 30)
    rows = _rows(tmp_path)

    assert [(r["source_line"], r["record_id"], r["label"], r["read_error"]) for r in rows] == [
        (2, "r1", "happy", None),
        (5, "r2", "sad", None),
        (6, None, None, "e.csv:6: not valid UTF-8 at byte 3"),
        (7, None, None, "e.csv:7: expected 3 fields, found 2"),
        (8, "r5", "neutral", None),
        (9, "r6", "NA", None),
        (10, None, None, "e.csv:10: line is 45 bytes, over the limit of 30"),
        (11, "r8", "last", None),
    ]
    # A column the header lacks is null; the start of an unreadable line is kept, escaped.
    assert all(row["confidence"] is None for row in rows)
    assert rows[2]["raw"] == "r3,\\xff,sad"
    assert read_landing_folder(tmp_path).schema == readers.BRONZE_SCHEMA


def test_lines_the_csv_module_refuses_are_quarantined_not_fatal(tmp_path):
    # A carriage return inside an unquoted field, and a field over the csv module's 128 KiB limit
    # in a line within the size limit, used to stop the whole day with csv.Error.
    (tmp_path / "f.csv").write_bytes(
        b"record_id,label\nr1,a\rb\nr2," + b"x" * 140_000 + b"\nr3,happy\n"
    )
    (tmp_path / "g.csv").write_bytes(b"record_id,la\rbel\nr4,sad\n")
    rows = _rows(tmp_path)

    assert [(row["source_file"], row["source_line"]) for row in rows] == [
        ("f.csv", 2),
        ("f.csv", 3),
        ("f.csv", 4),
        ("g.csv", 1),
    ]
    assert rows[0]["read_error"].startswith("f.csv:2: not readable as CSV (new-line character")
    assert rows[1]["read_error"].startswith("f.csv:3: not readable as CSV (field larger")
    assert rows[2]["record_id"] == "r3" and rows[2]["read_error"] is None
    assert rows[3]["read_error"].endswith("(header line)")
