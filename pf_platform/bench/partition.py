"""Benchmark of one whole payout partition: land, validate, aggregate, plan and pay a scaled day.

Run it with ``python -m pf_platform.bench.partition`` (``--help`` lists the knobs). For each
``--rows`` figure (200K and 2M by default) it:

1. lands one day of labels built from a bundled dataset: the dataset's real rows copied as many
   times as the row count needs, the last copy cut short. Copy ``c`` gets its own record_ids,
   item_ids (``c0007-344``) and agent ids (``agent_0001-c0007``), so items, agents and transfers
   grow with the rows while each copy keeps the real votes, agreement and spammers;
2. starts a sandbox in a temporary PF_HOME and registers every agent in bulk;
3. materializes the whole partition through Dagster's ``payout_job`` in this process
   (label_submissions, validate_labels, agent_payout_summary, payout_batches, transfer_results),
   with the spend guard approved for the run, as a person would for a day this large;
4. prints the wall time of each step (from the run's step events), the total, rows per second,
   transfers paid, this process's peak RSS (``ru_maxrss`` never goes down, so sizes run
   smallest first and each figure is the peak so far), CPU time here and in the sandbox, and
   the load average when the run started;
5. prints how long transfer_results took to its materialization (paying and recording) and to
   each of its asset checks;
6. checks the result: transfers committed on the sandbox equal the succeeded ledger rows, the
   USDC paid (ledger and sandbox balances) equals the sum of agent_payout_summary, and both match
   a plain-Python count of eligible agents and amounts made from the dataset itself.

It exits with status 1 when a check fails. ``--profile DIR`` runs each size under cProfile and
writes ``partition-<rows>.pstats`` there (the timings then include the profiler's overhead).
"""

from __future__ import annotations

import cProfile
import csv
import math
import os
import pstats
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import click
import dagster as dg
import pyarrow.compute as pc

from pf_platform.bench.common import (
    SandboxAdmin,
    children_cpu_seconds,
    cpu_seconds,
    peak_rss_mib,
)
from pf_platform.labeling.landing import BUNDLED_DATASETS, COLUMNS, Dataset, resolve_dataset
from pf_platform.partitions import FIRST_PAYOUT_DAY
from pf_platform.payouts.ledger import SUCCEEDED, Ledger
from pf_platform.resources.labeling import LabelingTaskResource
from pf_platform.resources.lake import LakeResource
from pf_platform.sandbox.server import SandboxProcess

DAY = FIRST_PAYOUT_DAY
STEPS = (
    "label_submissions",
    "validate_labels",
    "agent_payout_summary",
    "payout_batches",
    "transfer_results",
)
SECONDS_PER_DAY = 86_400
TREASURY_USDC = 10**7


@dataclass
class ScaledDay:
    """What was landed for the day, and what paying it should come to."""

    copies: int
    rows: int
    agents: list[str]
    files: int
    expected_transfers: int
    expected_usdc: Decimal


@dataclass
class Result:
    """One size's figures."""

    day: ScaledDay
    step_seconds: dict[str, float]
    total_seconds: float
    cpu_seconds: float
    sandbox_cpu_seconds: float
    peak_rss_mib: float
    load: str
    transfers: int = 0
    usdc_paid: Decimal = Decimal(0)
    problems: list[str] = field(default_factory=list)

    def line(self) -> str:
        steps = " | ".join(f"{self.step_seconds.get(step, float('nan')):.1f}" for step in STEPS)
        return (
            f"| {self.day.rows:,} | {self.day.copies} | {len(self.day.agents):,} | "
            f"{self.transfers:,} | {steps} | {self.total_seconds:.1f} | "
            f"{self.day.rows / self.total_seconds:,.0f} | {self.peak_rss_mib:,.0f} | "
            f"{self.cpu_seconds:.1f} | {self.sandbox_cpu_seconds:.1f} | {self.load} |"
        )


HEADER = (
    "| rows | copies | agents | transfers | "
    + " | ".join(f"{step} s" for step in STEPS)
    + " | total s | rows/s | peak RSS MiB | CPU here s | sandbox CPU s | load (1/5/15 min) |\n"
    + "|---:" * (4 + len(STEPS) + 5)
    + "|---|"
)


def _answers(dataset: Dataset) -> list[dict[str, str]]:
    with dataset.answers.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def owed_per_agent(answers: list[dict[str, str]], task: LabelingTaskResource) -> dict[str, Decimal]:
    """What each agent of one landed copy earns, counted in plain Python from the answers.

    The same rules as the SQL models, written out independently: a label outside the label set
    is not counted; an agent's first counted label of an item counts; an item with at least
    ``min_votes`` labels and a unique most frequent label has that label as consensus; an agent
    agreeing on at least ``agreement_threshold`` of its judged labels earns ``rate_usdc`` per
    agreeing label.
    """
    seen: set[tuple[str, str]] = set()
    kept = []
    for row in answers:
        if row["label"] not in task.label_set:
            continue
        if (row["agent_id"], row["item_id"]) not in seen:
            seen.add((row["agent_id"], row["item_id"]))
            kept.append(row)
    votes: dict[str, Counter] = defaultdict(Counter)
    for row in kept:
        votes[row["item_id"]][row["label"]] += 1
    consensus = {}
    for item, counter in votes.items():
        ranked = counter.most_common()
        unique_top = len(ranked) == 1 or ranked[0][1] > ranked[1][1]
        if unique_top and sum(counter.values()) >= task.min_votes:
            consensus[item] = ranked[0][0]
    judged: dict[str, list[bool]] = defaultdict(list)
    for row in kept:
        if row["item_id"] in consensus:
            judged[row["agent_id"]].append(row["label"] == consensus[row["item_id"]])
    threshold, rate = Decimal(task.agreement_threshold), Decimal(task.rate_usdc)
    owed = {}
    for agent, agreements in judged.items():
        agreeing = sum(agreements)
        if agreeing and agreeing >= threshold * len(agreements):
            owed[agent] = rate * agreeing
    return owed


def _copy_rows(
    dataset: Dataset, answers: list[dict[str, str]], copy: int, count: int
) -> Iterator[tuple[str, str, str, str]]:
    tag = f"c{copy:04d}"
    for number, row in enumerate(answers[:count], start=1):
        yield (
            f"{dataset.name}-{tag}-{number:06d}",
            f"{tag}-{row['item_id']}",
            f"{row['agent_id']}-{tag}",
            row["label"],
        )


def land_scaled_day(
    dataset: Dataset, folder: Path, rows: int, files: int, task: LabelingTaskResource
) -> ScaledDay:
    """Writes ``rows`` labels for one day as ``files`` CSV files; returns what was landed."""
    answers = _answers(dataset)
    copies = math.ceil(rows / len(answers))
    # Copy c holds min(len(answers), what is left) rows; only the last one is ever cut.
    sizes = [min(len(answers), rows - copy * len(answers)) for copy in range(copies)]
    per_file = math.ceil(copies / files)
    folder.mkdir(parents=True, exist_ok=True)
    midnight = datetime.fromisoformat(DAY).replace(tzinfo=UTC)

    rank = 0
    agents: set[str] = set()
    written = 0
    for first in range(0, copies, per_file):
        path = folder / f"{dataset.name}-{first // per_file:03d}.csv"
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(COLUMNS)
            for copy in range(first, min(first + per_file, copies)):
                for record_id, item_id, agent_id, label in _copy_rows(
                    dataset, answers, copy, sizes[copy]
                ):
                    # Spread over the day's seconds, so every stamp lies within the day.
                    stamp = midnight + timedelta(seconds=rank * SECONDS_PER_DAY // rows)
                    rank += 1
                    agents.add(agent_id)
                    writer.writerow(
                        (record_id, item_id, agent_id, label, stamp.strftime("%Y-%m-%dT%H:%M:%SZ"))
                    )
        written += 1

    # Every full copy earns what the dataset earns; the cut copy is counted on its own rows.
    full = owed_per_agent(answers, task)
    full_copies = sum(1 for size in sizes if size == len(answers))
    transfers, usdc = full_copies * len(full), full_copies * sum(full.values(), Decimal(0))
    if full_copies < copies:
        cut = owed_per_agent(answers[: sizes[-1]], task)
        transfers, usdc = transfers + len(cut), usdc + sum(cut.values(), Decimal(0))
    return ScaledDay(copies, rows, sorted(agents), written, transfers, usdc)


def _step_seconds(instance: dg.DagsterInstance, run_id: str) -> dict[str, float]:
    """Seconds from each step's start event to its success event."""
    started: dict[str, float] = {}
    seconds: dict[str, float] = {}
    for entry in instance.all_logs(
        run_id, of_type={dg.DagsterEventType.STEP_START, dg.DagsterEventType.STEP_SUCCESS}
    ):
        step = entry.step_key
        if entry.dagster_event_type == dg.DagsterEventType.STEP_START:
            started[step] = entry.timestamp
        elif step in started:
            seconds[step] = entry.timestamp - started[step]
    return seconds


def _phases(instance: dg.DagsterInstance, run_id: str, step: str) -> list[tuple[str, float]]:
    """Within one step: seconds to its materialization, then to each asset check's result.

    The step yields its materialization and then computes and yields its checks one by one, so
    the gap before each check's event is the time that check took.
    """
    kinds = {
        dg.DagsterEventType.STEP_START,
        dg.DagsterEventType.ASSET_MATERIALIZATION,
        dg.DagsterEventType.ASSET_CHECK_EVALUATION,
    }
    phases: list[tuple[str, float]] = []
    previous = None
    for entry in instance.all_logs(run_id, of_type=kinds):
        if entry.step_key != step:
            continue
        if previous is not None:
            evaluation = entry.asset_check_evaluation
            name = evaluation.check_name if evaluation is not None else "materialization"
            phases.append((name, entry.timestamp - previous))
        previous = entry.timestamp
    return phases


def _set_env(home: Path, base_url: str, key: str) -> None:
    # The resources read these when the definitions are built, as in the demo.
    os.environ["PF_HOME"] = str(home)
    os.environ["DAGSTER_HOME"] = str(home / "dagster")
    os.environ["PF_API_BASE_URL"] = base_url
    os.environ["PF_API_KEY"] = key
    for name in ("PF_LAKE_ROOT", "PF_LANDING_ROOT", "PF_PROFILE"):
        os.environ.pop(name, None)
    (home / "dagster").mkdir(parents=True, exist_ok=True)


def _check(result: Result, admin: SandboxAdmin, lake: LakeResource) -> None:
    """Fills in what was paid and notes every disagreement in ``result.problems``."""
    ledger = Ledger(lake.uri("agents", "transactions")).read(DAY)
    succeeded = [row for row in ledger if row.status == SUCCEEDED]
    result.transfers = len(succeeded)
    result.usdc_paid = sum((row.amount_usdc for row in succeeded), Decimal(0))
    summary = lake.read_partition("agents", "payout_summary", DAY)
    owed = Decimal(0)
    if summary is not None and summary.num_rows:
        owed = pc.sum(summary["amount_owed_usdc"]).as_py()
    committed = admin.stats()["transfers_committed"]
    on_sandbox = Decimal(admin.audit()["agents_usdc"])

    expected = result.day
    checks = [
        (committed == result.transfers, f"{committed:,} committed on the sandbox"),
        (len(ledger) == result.transfers, f"{len(ledger) - result.transfers:,} not succeeded"),
        (result.usdc_paid == owed, f"agent_payout_summary owes {owed} USDC"),
        (on_sandbox == result.usdc_paid, f"agents hold {on_sandbox} USDC on the sandbox"),
        (
            result.transfers == expected.expected_transfers,
            f"{expected.expected_transfers:,} transfers expected from the dataset",
        ),
        (result.usdc_paid == expected.expected_usdc, f"{expected.expected_usdc} USDC expected"),
    ]
    for ok, what in checks:
        if not ok:
            result.problems.append(
                f"{result.transfers:,} transfers / {result.usdc_paid} USDC in the ledger, but "
                f"{what}"
            )


def run_size(
    root: Path,
    dataset: Dataset,
    rows: int,
    files: int,
    profile_dir: Path | None,
    echo=click.echo,
) -> Result:
    """Lands, pays and checks one scaled day in its own PF_HOME and sandbox."""
    home = root / f"rows-{rows}"
    task = LabelingTaskResource(label_set=list(dataset.label_set))
    started = time.perf_counter()
    day = land_scaled_day(dataset, home / "landing" / DAY, rows, files, task)
    echo(
        f"{rows:,} rows: {day.copies} copies of {dataset.name} ({len(day.agents):,} agents)"
        f" in {day.files} CSV files, landed in {time.perf_counter() - started:.1f} s; "
        f"{day.expected_transfers:,} transfers ({day.expected_usdc} USDC) expected"
    )

    with SandboxProcess(home / "sandbox" / "ledger.db", treasury_usdc=TREASURY_USDC) as sandbox:
        admin = SandboxAdmin(sandbox.base_url, sandbox.treasury_key)
        started = time.perf_counter()
        admin.register(day.agents)
        echo(f"  {len(day.agents):,} agents registered in {time.perf_counter() - started:.1f} s")
        _set_env(home, sandbox.base_url, sandbox.treasury_key)

        # Imported here so the resources read the environment just set.
        from pf_platform.definitions import build_definitions

        job = build_definitions("local").resolve_job_def("payout_job")
        run_config = {
            "resources": {"labeling_task": {"config": {"label_set": list(dataset.label_set)}}},
            "ops": {"transfer_results": {"config": {"approve_spend_over_limits": True}}},
            "loggers": {"console": {"config": {"log_level": "WARNING"}}},
        }
        instance = dg.DagsterInstance.ephemeral()
        load = " / ".join(f"{value:.2f}" for value in os.getloadavg())
        profiler = cProfile.Profile() if profile_dir is not None else None
        cpu, server_cpu = cpu_seconds(), children_cpu_seconds()
        started = time.perf_counter()
        if profiler is not None:
            profiler.enable()
        run = job.execute_in_process(
            partition_key=DAY, run_config=run_config, instance=instance, raise_on_error=False
        )
        if profiler is not None:
            profiler.disable()
        total = time.perf_counter() - started
        cpu, server_cpu = cpu_seconds() - cpu, children_cpu_seconds() - server_cpu

        result = Result(
            day=day,
            step_seconds=_step_seconds(instance, run.run_id),
            total_seconds=total,
            cpu_seconds=cpu,
            sandbox_cpu_seconds=server_cpu,
            peak_rss_mib=peak_rss_mib(),
            load=load,
        )
        if not run.success:
            failures = [
                event.step_key
                for event in run.all_events
                if event.event_type == dg.DagsterEventType.STEP_FAILURE
            ]
            result.problems.append(f"the run failed at {', '.join(failures) or 'start-up'}")
        _check(result, admin, LakeResource())
        admin.close()
        phases = _phases(instance, run.run_id, "transfer_results")
        echo(
            "  transfer_results, seconds to each event: "
            + ", ".join(f"{name} {seconds:.1f}" for name, seconds in phases)
        )

    if profiler is not None and profile_dir is not None:
        profile_dir.mkdir(parents=True, exist_ok=True)
        path = profile_dir / f"partition-{rows}.pstats"
        profiler.dump_stats(path)
        echo(f"  profile written to {path}; the 25 costliest calls by cumulative time:")
        stats = pstats.Stats(str(path), stream=sys.stdout)
        stats.sort_stats("cumulative").print_stats(25)
    return result


def _sizes(value: str) -> list[int]:
    try:
        sizes = sorted({int(part.replace("_", "")) for part in value.split(",") if part.strip()})
    except ValueError as exc:
        raise click.BadParameter(f"a comma-separated list of row counts, not {value!r}") from exc
    if not sizes or sizes[0] < 1:
        raise click.BadParameter("row counts must be positive")
    return sizes


@click.command()
@click.option(
    "--rows",
    "rows_text",
    default="200000,2000000",
    show_default=True,
    help="Comma-separated label row counts, one run each, smallest first.",
)
@click.option(
    "--dataset",
    default="face-sentiment",
    show_default=True,
    type=click.Choice(BUNDLED_DATASETS),
    help="The bundled dataset whose rows are copied.",
)
@click.option("--files", default=4, show_default=True, type=click.IntRange(1))
@click.option(
    "--budget-seconds",
    default=60.0,
    show_default=True,
    help="Target for the largest size; reported, not enforced (the machine may be busy).",
)
@click.option(
    "--profile",
    "profile_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Run each size under cProfile and write partition-<rows>.pstats here.",
)
def main(
    rows_text: str, dataset: str, files: int, budget_seconds: float, profile_dir: Path | None
) -> None:
    """Time one whole payout partition, landing to ledger, for each row count."""
    sizes = _sizes(rows_text)
    chosen = resolve_dataset(dataset)
    saved = dict(os.environ)
    results: list[Result] = []
    try:
        with tempfile.TemporaryDirectory(prefix="pf-bench-partition-") as folder:
            for rows in sizes:
                result = run_size(Path(folder), chosen, rows, files, profile_dir)
                results.append(result)
                click.echo(HEADER.splitlines()[0])
                click.echo(result.line())
    finally:
        os.environ.clear()
        os.environ.update(saved)

    click.echo(f"\n{os.cpu_count()} cores; peak RSS is of this process, the sandbox excluded\n")
    click.echo(HEADER)
    for result in results:
        click.echo(result.line())
    largest = results[-1]
    verdict = "within" if largest.total_seconds <= budget_seconds else "OVER"
    click.echo(
        f"\n{largest.day.rows:,} rows in {largest.total_seconds:.1f} s: {verdict} the "
        f"{budget_seconds:.0f} s target"
    )
    problems = [f"{r.day.rows:,} rows: {problem}" for r in results for problem in r.problems]
    for problem in problems:
        click.echo(f"FAIL: {problem}", err=True)
    if problems:
        sys.exit(1)
    click.echo(
        "ok: every size paid what agent_payout_summary owes; sandbox and ledger agree, and both "
        "match the dataset"
    )


if __name__ == "__main__":
    main()
