"""SIGKILL in the middle of a real Dagster payout run, then a re-run through Dagster.

Contract: a payout_job child process killed with SIGKILL at any moment of its transfer phase
leaves a ledger the next run can settle. The re-run succeeds with every check passing, the day's
ledger holds one succeeded row per agent for exactly what agents.payout_summary says it is owed,
each key has one transaction on the API, and once every day has been killed and re-run each
agent's balance is the sum of what it is owed over the days.

The bundled face-sentiment dataset is landed over 20 days and schedule ``k`` kills day ``k``.
The child sends batches of 1 to 3 transfers one at a time against a sandbox that adds 150 to
200 ms to each request, and is killed at a seeded moment after its first request reaches the
sandbox: a random share of the phase's expected length, at most 1.5 s. Children start one
schedule ahead and wait to be told to go, so their imports overlap the previous re-run. Every
fifth child sends from Spark tasks (two on a local session), so its kill also takes down a
running Spark job whose tasks may still be sending; the re-run is in process.
"""

from __future__ import annotations

import csv
import math
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from pathlib import Path

import dagster as dg
import pytest

from pf_platform.labeling.landing import resolve_dataset, spread_over_days
from pf_platform.payouts.ledger import SUCCEEDED, UNSETTLED, LedgerRow
from pf_platform.resources.lake import LakeResource
from pf_platform.sandbox.server import SandboxProcess
from pf_platform_tests.faults.conftest import Admin, FaultFigures
from pf_platform_tests.helpers import materialization, run_day

KILLS = 20
FIRST_DAY = date(2026, 11, 1)
PAYOUT_KIND = "labeling"
RUNNER = "pf_platform_tests.faults.materialize_day"
REPO_ROOT = Path(__file__).resolve().parents[2]
MAX_KILL_DELAY_S = 1.5
START_TIMEOUT_S = 120


@dataclass(frozen=True)
class KillSchedule:
    index: int
    day: str
    batch_size: int
    latency_ms: int
    fraction: float
    fan_out: str

    @classmethod
    def make(cls, index: int, day: str) -> KillSchedule:
        rng = random.Random(f"sigkill-schedule-{index}")
        return cls(
            index=index,
            day=day,
            batch_size=rng.randint(1, 3),
            latency_ms=rng.randint(150, 200),
            fraction=rng.random(),
            fan_out="spark" if index % 5 == 4 else "in_process",
        )

    def kill_delay(self, transfers: int) -> float:
        """Seconds from the first request to the kill: a share of the phase, at most 1.5 s."""
        phase = math.ceil(transfers / self.batch_size) * self.latency_ms / 1000
        return self.fraction * min(MAX_KILL_DELAY_S, phase)


class Child:
    """A payout_job child process for one day, started early and told when to go."""

    def __init__(self, schedule: KillSchedule, env: dict[str, str], log_dir: Path) -> None:
        self.schedule = schedule
        self.log_path = log_dir / f"child-{schedule.day}.log"
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    RUNNER,
                    schedule.day,
                    "--batch-size",
                    str(schedule.batch_size),
                    "--concurrency",
                    "1",
                    "--wait",
                    "--fan-out",
                    schedule.fan_out,
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                env=env,
                cwd=REPO_ROOT,
            )

    def go(self) -> None:
        """Waits until the child is ready, then lets it run."""
        assert self.process.stdout is not None and self.process.stdin is not None
        line = self.process.stdout.readline()
        assert line == b"ready\n", f"child said {line!r}:\n{self.log_tail()}"
        self.process.stdin.write(b"go\n")
        self.process.stdin.flush()

    def stop(self) -> None:
        """Ends the child: one never told to go exits at end of input, any other is killed."""
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.close()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process.stdout.close()

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class KillWorld:
    """One PF_HOME, one sandbox, the landed days, and children started ahead of their turn."""

    home: Path
    admin: Admin
    days: list[str]
    owed_total: dict[str, Decimal] = field(default_factory=dict)
    children: dict[int, Child] = field(default_factory=dict)
    done: set[int] = field(default_factory=set)

    def child(self, index: int) -> Child:
        if index not in self.children:
            schedule = KillSchedule.make(index, self.days[index])
            env = {**os.environ, "PYTHONUNBUFFERED": "1"}
            self.children[index] = Child(schedule, env, self.home)
        return self.children[index]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KillWorld]:
    home = tmp_path_factory.mktemp("sigkill") / "home"
    dataset = resolve_dataset("face-sentiment")
    landed = spread_over_days(dataset, home / "landing", FIRST_DAY, days=KILLS)
    with (
        SandboxProcess(home / "sandbox" / "ledger.db") as process,
        pytest.MonkeyPatch.context() as env,
    ):
        env.setenv("PF_HOME", str(home))
        env.setenv("DAGSTER_HOME", str(home / "dagster"))
        env.setenv("PF_API_BASE_URL", process.base_url)
        env.setenv("PF_API_KEY", process.treasury_key)
        for name in ("PF_LAKE_ROOT", "PF_LANDING_ROOT", "PF_PROFILE"):
            env.delenv(name, raising=False)
        admin = Admin(process.base_url, process.treasury_key)
        with dataset.answers.open(newline="") as handle:
            admin.register(sorted({row["agent_id"] for row in csv.DictReader(handle)}))
        world = KillWorld(home=home, admin=admin, days=[day.isoformat() for day in landed])
        try:
            yield world
        finally:
            for child in world.children.values():
                child.stop()
            admin.close()


def _owed(day: str) -> dict[str, Decimal]:
    summary = LakeResource().read_partition("agents", "payout_summary", day)
    assert summary is not None
    return {
        row["agent_id"]: row["amount_owed_usdc"]
        for row in summary.select(["agent_id", "amount_owed_usdc"]).to_pylist()
        if row["amount_owed_usdc"] > 0
    }


def _ledger(day: str) -> list[LedgerRow]:
    return LakeResource().ledger().read(day, PAYOUT_KIND)


def _paid_by_agent(rows: list[LedgerRow]) -> dict[str, Decimal]:
    paid: dict[str, Decimal] = {}
    for row in rows:
        if row.status == SUCCEEDED:
            paid[row.agent_id] = paid.get(row.agent_id, Decimal(0)) + row.amount_usdc
    return paid


def _commits(world: KillWorld) -> set[str]:
    log = world.home / "lake" / "agents" / "transactions" / "_delta_log"
    return {name for name in os.listdir(log) if name.endswith(".json")} if log.exists() else set()


def _wait_for_first_request(world: KillWorld, child: Child, commits: set[str], sent: int) -> None:
    """Waits until the child's first batch request has reached the sandbox.

    The ledger's commit log is watched first: a directory listing is cheap, where polling the
    sandbox all through the child's start would take CPU from it. The write-ahead intents are
    committed just before the first request, so the sandbox is polled only from then on.
    """
    deadline = time.monotonic() + START_TIMEOUT_S
    while _commits(world) == commits:
        assert child.process.poll() is None, f"child ended early:\n{child.log_tail()}"
        assert time.monotonic() < deadline, f"no intents within {START_TIMEOUT_S} s"
        time.sleep(0.005)
    while world.admin.stats()["faults"].get("latency", 0) == sent:
        assert child.process.poll() is None, f"child ended early:\n{child.log_tail()}"
        assert time.monotonic() < deadline, f"no request within {START_TIMEOUT_S} s"
        time.sleep(0.01)


@pytest.mark.parametrize("index", range(KILLS), ids=lambda index: f"k{index:02d}")
def test_sigkill_mid_transfer_then_rerun(
    index: int, world: KillWorld, fault_figures: FaultFigures
) -> None:
    child = world.child(index)
    schedule = child.schedule
    if index + 1 < KILLS:
        world.child(index + 1)  # warms up while this schedule runs
    started = time.perf_counter()
    world.admin.set_faults({"latency_ms": schedule.latency_ms})
    before = world.admin.stats()

    commits = _commits(world)

    try:
        child.go()
        _wait_for_first_request(world, child, commits, before["faults"].get("latency", 0))
        triggered = time.monotonic()
        intents = _ledger(schedule.day)
        delay = schedule.kill_delay(len(intents))
        time.sleep(max(0.0, triggered + delay - time.monotonic()))
        child.process.send_signal(signal.SIGKILL)
        returncode = child.process.wait()
    finally:
        child.stop()
    committed_at_kill = world.admin.stats()["transfers_committed"] - before["transfers_committed"]
    # A request already in the server's hands still commits; give it time to land.
    time.sleep(schedule.latency_ms / 1000 + 0.1)
    world.admin.set_faults({"latency_ms": 0})
    after_kill = _ledger(schedule.day)
    unsettled = sum(1 for row in after_kill if row.status in UNSETTLED)

    result = run_day(schedule.day, instance=dg.DagsterInstance.ephemeral())

    assert result.success
    rerun = materialization(result, "transfer_results", "transfer_results")
    rows = _ledger(schedule.day)
    owed = _owed(schedule.day)
    transactions = {
        row.idempotency_key: world.admin.transactions(row.idempotency_key) for row in rows
    }
    after = world.admin.stats()
    double = sum(1 for found in transactions.values() if len(found) > 1)
    paid = _paid_by_agent(rows)
    double += sum(1 for agent, amount in paid.items() if amount > owed.get(agent, Decimal(0)))
    lost = sum(1 for agent, amount in owed.items() if paid.get(agent, Decimal(0)) < amount)
    world.owed_total.update(
        {agent: world.owed_total.get(agent, Decimal(0)) + amount for agent, amount in owed.items()}
    )
    world.done.add(index)
    fault_figures.kill_schedules += 1
    fault_figures.spark_kills += int(schedule.fan_out == "spark")
    fault_figures.faults["sigkill"] += 1
    fault_figures.kills_after_commit += int(committed_at_kill > 0)
    fault_figures.kills_mid_transfer += int(0 < committed_at_kill < len(intents))
    fault_figures.double_payments += double
    fault_figures.lost_payments += lost
    fault_figures.kill_seconds += time.perf_counter() - started

    assert returncode == -signal.SIGKILL, child.log_tail()
    assert (double, lost) == (0, 0)
    assert [e.check_name for e in result.get_asset_check_evaluations() if not e.passed] == []
    assert Counter(row.status for row in rows) == {SUCCEEDED: len(rows)}
    assert paid == owed
    assert len(rows) == len(owed) == len(intents)
    assert {key: len(found) for key, found in transactions.items()} == {
        row.idempotency_key: 1 for row in rows
    }
    # What the killed run left unsettled was either found paid by lookup or sent now, and the
    # API committed each key of the day once, before or after the kill.
    assert rerun["reconciled_by_lookup"] + rerun["transfers_sent"] == unsettled
    assert after["transfers_committed"] - before["transfers_committed"] == len(rows)


def test_balances_are_the_sum_over_days(world: KillWorld, fault_figures: FaultFigures) -> None:
    if len(world.done) < KILLS:
        pytest.skip("only part of the kill schedules ran")
    balances = world.admin.balances()

    assert {agent: amount for agent, amount in balances.items() if amount} == world.owed_total
    assert (fault_figures.double_payments, fault_figures.lost_payments) == (0, 0)
    # Most kills land after at least one transfer committed.
    assert fault_figures.kills_after_commit > KILLS // 2
