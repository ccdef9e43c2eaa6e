"""The payout layer under 200 seeded fault schedules against one real sandbox server.

Contract: however the API misbehaves (503 before or after the commit, a response held past the
client's read timeout, a connection dropped after the commit, 429 storms with ``Retry-After``
in seconds or as an HTTP-date), paying a partition by repeated runs of ``plan_payouts`` and
``pay_planned`` ends with every agent holding exactly what it is owed, one API transaction per
idempotency key, and a ledger that reconciles with the API key by key. Labels that arrive after
a first run (a higher amount owed) are paid as top-ups under new keys. Nothing is paid twice and
nothing is lost.

Each schedule draws its agents, amounts, batching, client retries and fault mix from its own
seed, and seeds the sandbox's fault schedule with its index. A further 25 schedules are paid by
the Spark fan-out (two mapInPandas tasks on a local session, each with its own client) under the
same contract; a task that fails is retried by Spark and resends only keys the API replays. With parallel requests and real
timeouts, which request meets which fault still varies a little from one session to the next.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from pyspark.sql import SparkSession

from pf_platform.payouts.execution import Reconciliation, pay_planned, reconcile_ledger
from pf_platform.payouts.fanout import FanOut, InProcessFanOut, SparkFanOut, SparkJobError
from pf_platform.payouts.ledger import SUCCEEDED, UNKNOWN, Ledger, LedgerRow
from pf_platform.payouts.planning import plan_payouts
from pf_platform.resources.payments.client import ClientSettings, PurpleFleaClient
from pf_platform.resources.payments.errors import PurpleFleaError
from pf_platform.sandbox.server import SandboxProcess
from pf_platform_tests.faults.conftest import (
    INJECTED_KINDS,
    TLS,
    Admin,
    FaultFigures,
    fault_counts,
)

SCHEDULES = 200
# Schedules numbered from 1000 are paid from Spark tasks: other agents, other days.
SPARK_SCHEDULES = range(1000, 1025)
MAX_RUNS = 8
PAYOUT_KIND = "labeling"
FIRST_DAY = date(2027, 1, 1)

# A held response outlives the client's read timeout, so a "timeout after commit" costs each
# attempt 0.15 s instead of the sandbox's default 30 s.
HANG_SECONDS = 0.3
READ_TIMEOUT_S = 0.15
# Once the faults are off, a slow moment on a busy machine must not pass for a fault.
CALM_READ_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Schedule:
    """One partition paid under one fault mix.

    Attributes:
        index: the schedule's number; its agents are ``s{index:03d}_...``.
        day: the partition.
        owed: what each agent is owed at the first run.
        top_ups: what late labels add before the second run; an agent missing from ``owed``
            is first owed at that point.
        batch_size: transfers per request.
        concurrency: requests in flight.
        max_attempts: tries per request, so some batches run out and end unknown.
        faulty_runs: runs made with the faults on; later runs are calm.
        knobs: the fault knobs of the faulty runs.
    """

    index: int
    day: str
    owed: dict[str, Decimal]
    top_ups: dict[str, Decimal]
    batch_size: int
    concurrency: int
    max_attempts: int
    faulty_runs: int
    knobs: dict[str, Any]

    @property
    def agents(self) -> list[str]:
        return sorted(set(self.owed) | set(self.top_ups))

    @property
    def final_owed(self) -> dict[str, Decimal]:
        return {
            a: self.owed.get(a, Decimal(0)) + self.top_ups.get(a, Decimal(0)) for a in self.agents
        }


def _amount(rng: random.Random) -> Decimal:
    """An exact micro-USDC amount in 0.000001..5, with the two ends drawn now and then."""
    micros = rng.choice([1, 5_000_000]) if rng.random() < 0.1 else rng.randint(1, 5_000_000)
    return Decimal(micros).scaleb(-6)


def _rate(rng: random.Random, high: float) -> float:
    return round(rng.uniform(0.05, high), 3) if rng.random() < 0.6 else 0.0


def make_schedule(index: int) -> Schedule:
    """The schedule numbered ``index``; the same index always gives the same schedule."""
    rng = random.Random(f"payout-schedule-{index}")
    # 3 to 30 agents, most schedules near the low end: the checks cost a request per agent.
    agents = [f"s{index:03d}_agent{n:02d}" for n in range(3 + round(27 * rng.random() ** 3))]
    owed = {agent: _amount(rng) for agent in agents}

    top_ups: dict[str, Decimal] = {}
    if rng.random() < 0.35:
        for agent in agents[1:]:
            if rng.random() < 0.1:
                top_ups[agent] = owed.pop(agent)  # all of its labels arrive late
            elif rng.random() < 0.4:
                top_ups[agent] = _amount(rng)

    knobs: dict[str, Any] = {
        "error_before_commit_rate": _rate(rng, 0.3),
        "error_after_commit_rate": _rate(rng, 0.3),
        "drop_after_commit_rate": _rate(rng, 0.3),
        "timeout_after_commit_rate": _rate(rng, 0.15),
        "hang_seconds": HANG_SECONDS,
        "storm_429": None,
        "seed": index,
    }
    if rng.random() < 0.25:
        knobs["storm_429"] = {
            "count": rng.randint(1, 4),
            "retry_after": rng.choice([0, 1]),
            "form": rng.choice(["seconds", "http-date"]),
        }
    if not any(value for name, value in knobs.items() if name.endswith("_rate")):
        knobs["error_after_commit_rate"] = 0.2

    return Schedule(
        index=index,
        day=(FIRST_DAY + timedelta(days=index)).isoformat(),
        owed=owed,
        top_ups=top_ups,
        batch_size=rng.randint(1, 10),
        concurrency=rng.randint(1, 4),
        max_attempts=rng.randint(1, 3),
        faulty_runs=rng.randint(1, 3),
        knobs=knobs,
    )


def test_schedule_mix_is_fixed() -> None:
    """The schedules are the same in every session and cover every fault the suite claims."""
    schedules = [make_schedule(index) for index in range(SCHEDULES)]
    storms = [s.knobs["storm_429"] for s in schedules if s.knobs["storm_429"]]
    rates = ("error_before", "error_after", "drop_after", "timeout_after")

    assert [make_schedule(index) for index in range(SCHEDULES)] == schedules
    assert sum(len(s.agents) for s in schedules) == 1944
    assert (min(len(s.agents) for s in schedules), max(len(s.agents) for s in schedules)) == (3, 29)
    assert sum(1 for s in schedules if s.top_ups) == 73
    assert sum(1 for s in schedules for agent in s.top_ups if agent not in s.owed) == 79
    assert {
        rate: sum(1 for s in schedules if s.knobs[f"{rate}_commit_rate"]) for rate in rates
    } == {
        "error_before": 128,
        "error_after": 121,
        "drop_after": 132,
        "timeout_after": 128,
    }
    assert Counter((storm["form"], storm["retry_after"]) for storm in storms) == {
        ("seconds", 0): 16,
        ("seconds", 1): 8,
        ("http-date", 0): 9,
        ("http-date", 1): 13,
    }
    assert Counter(s.faulty_runs for s in schedules) == {1: 67, 2: 59, 3: 74}
    assert Counter(s.max_attempts for s in schedules) == {1: 69, 2: 67, 3: 64}


@dataclass
class Server:
    """The module's sandbox, its treasury at the start, and what every schedule owed."""

    process: SandboxProcess
    admin: Admin
    treasury_usdc: Decimal
    owed: dict[str, Decimal] = field(default_factory=dict)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One sandbox for the module, on a fresh ledger; it must audit clean at the end."""
    db_path = tmp_path_factory.mktemp("payout-schedules") / "ledger.db"
    with SandboxProcess(db_path) as process:
        admin = Admin(process.base_url, process.treasury_key)
        yield Server(process, admin, admin.audit()["treasury_usdc"])
        audit = admin.audit()
        admin.close()
    assert (audit["entries_sum_micros"], audit["negative_balances"]) == (0, 0)


def _client(server: Server, connections: int, **options: Any) -> PurpleFleaClient:
    """A client whose transport reuses the suite's TLS context; pool limits as the default's."""
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    return PurpleFleaClient(
        server.process.base_url,
        server.process.treasury_key,
        transport=httpx.AsyncHTTPTransport(verify=TLS, limits=limits),
        **options,
    )


def _client_options(schedule: Schedule, calm: bool) -> dict[str, Any]:
    return {
        "read_timeout_s": CALM_READ_TIMEOUT_S if calm else READ_TIMEOUT_S,
        "max_attempts": schedule.max_attempts,
        "backoff_initial_s": 0.002,
        "backoff_max_s": 0.02,
        "retry_after_max_s": 0.05,
    }


def in_process(server: Server, schedule: Schedule, calm: bool) -> FanOut:
    def build() -> PurpleFleaClient:
        return _client(
            server, schedule.concurrency, seed=schedule.index, **_client_options(schedule, calm)
        )

    return InProcessFanOut(build, schedule.batch_size, schedule.concurrency)


def from_spark(spark: SparkSession) -> FanOutFor:
    def fan_out(server: Server, schedule: Schedule, calm: bool) -> FanOut:
        settings = ClientSettings(
            server.process.base_url,
            server.process.treasury_key,
            # Two tasks, each with half: at least one request in flight per task.
            concurrency=2 * schedule.concurrency,
            **_client_options(schedule, calm),
        )
        return SparkFanOut(lambda: spark, settings, schedule.batch_size, partitions=2)

    return fan_out


FanOutFor = Callable[[Server, Schedule, bool], FanOut]


@dataclass
class RunTally:
    runs: int = 0
    aborted: int = 0
    unknown: int = 0
    found_by_lookup: int = 0


def pay_until_settled(
    server: Server, schedule: Schedule, ledger: Ledger, fan_out_for: FanOutFor = in_process
) -> RunTally:
    """Runs the payout layer until a plan has nothing left to settle; faults first, then calm."""
    tally = RunTally()
    owed = schedule.owed
    server.admin.set_faults(schedule.knobs)
    while True:
        calm = tally.runs >= schedule.faulty_runs
        if tally.runs == schedule.faulty_runs:
            server.admin.calm()
        if tally.runs == 1:
            owed = schedule.final_owed

        plan = plan_payouts(
            owed,
            ledger.read(schedule.day, PAYOUT_KIND),
            payout_kind=PAYOUT_KIND,
            partition_date=schedule.day,
            batch_size=schedule.batch_size,
        )
        if not plan.transfers and tally.runs >= 1:
            return tally
        assert tally.runs < MAX_RUNS, f"schedule {schedule.index} unsettled after {MAX_RUNS} runs"

        tally.runs += 1
        try:
            report = pay_planned(
                ledger,
                fan_out_for(server, schedule, calm),
                plan.transfers,
                partition_date=schedule.day,
                payout_kind=PAYOUT_KIND,
                run_id=f"s{schedule.index:03d}-run{tally.runs}",
            )
        except (PurpleFleaError, SparkJobError):
            # A key whose lookup failed must not be resent: the run stops, the next one retries.
            tally.aborted += 1
            continue
        tally.unknown += report.count(UNKNOWN)
        tally.found_by_lookup += report.reconciled


async def _reconcile(server: Server, rows: list[LedgerRow]) -> Reconciliation:
    async with _client(server, 4) as client:
        return await reconcile_ledger(client, rows, concurrency=4)


def _paid_by_agent(rows: list[LedgerRow]) -> dict[str, Decimal]:
    paid: dict[str, Decimal] = defaultdict(Decimal)
    for row in rows:
        if row.status == SUCCEEDED:
            paid[row.agent_id] += row.amount_usdc
    return dict(paid)


@pytest.mark.parametrize("index", range(SCHEDULES), ids=lambda index: f"s{index:03d}")
def test_schedule_pays_exactly_once(
    index: int, server: Server, tmp_path: Path, fault_figures: FaultFigures
) -> None:
    check_schedule(make_schedule(index), server, tmp_path, fault_figures, in_process)


@pytest.mark.parametrize("index", SPARK_SCHEDULES, ids=lambda index: f"s{index:04d}")
def test_schedule_pays_exactly_once_from_spark_tasks(
    index: int, server: Server, tmp_path: Path, fault_figures: FaultFigures, spark: SparkSession
) -> None:
    check_schedule(make_schedule(index), server, tmp_path, fault_figures, from_spark(spark))
    fault_figures.spark_schedules += 1


def check_schedule(
    schedule: Schedule,
    server: Server,
    tmp_path: Path,
    fault_figures: FaultFigures,
    fan_out_for: FanOutFor,
) -> None:
    """Pays the schedule until settled, then checks balances, ledger and API key by key."""
    agent_keys = server.admin.register(schedule.agents)
    ledger = Ledger(str(tmp_path / "transactions"))
    before = server.admin.stats()
    started = time.perf_counter()

    try:
        runs = pay_until_settled(server, schedule, ledger, fan_out_for)
    finally:
        server.admin.calm()

    rows = ledger.read(schedule.day, PAYOUT_KIND)
    balances = {agent: server.admin.balance(key) for agent, key in agent_keys.items()}
    transactions = {
        row.idempotency_key: server.admin.transactions(row.idempotency_key) for row in rows
    }
    reconciliation = asyncio.run(_reconcile(server, rows))
    after = server.admin.stats()
    owed = schedule.final_owed
    total = sum(owed.values(), Decimal(0))
    double = sum(1 for a in owed if balances[a] > owed[a])
    double += sum(1 for found in transactions.values() if len(found) > 1)
    lost = sum(1 for a in owed if balances[a] < owed[a])
    server.owed.update(owed)
    fault_figures.payout_schedules += 1
    fault_figures.payout_runs += runs.runs
    fault_figures.payout_runs_aborted += runs.aborted
    fault_figures.unknown_outcomes += runs.unknown
    fault_figures.found_paid_by_lookup += runs.found_by_lookup
    fault_figures.top_ups += sum(1 for row in rows if row.sequence > 0)
    fault_figures.faults.update(fault_counts(before, after))
    fault_figures.double_payments += double
    fault_figures.lost_payments += lost
    fault_figures.payout_seconds += time.perf_counter() - started

    assert (double, lost) == (0, 0)
    assert balances == owed
    assert Counter(row.status for row in rows) == {SUCCEEDED: len(rows)}
    assert _paid_by_agent(rows) == owed
    assert {key: len(found) for key, found in transactions.items()} == {
        row.idempotency_key: 1 for row in rows
    }
    assert [
        (found[0]["recipient_agent_id"], found[0]["amount_usdc"], found[0]["tx_id"])
        for found in transactions.values()
    ] == [(row.agent_id, row.amount_usdc, row.tx_id) for row in rows]
    assert reconciliation.mismatches == []
    assert reconciliation.matches is True
    assert (reconciliation.ledger_usdc, reconciliation.api_usdc) == (total, total)
    assert (reconciliation.ledger_succeeded, reconciliation.api_transactions) == (
        len(rows),
        len(rows),
    )
    # The API committed each key of this schedule once, whatever was resent or replayed.
    assert after["transfers_committed"] - before["transfers_committed"] == len(rows)
    assert len(rows) == len(owed) + sum(1 for a in schedule.top_ups if a in schedule.owed)


def test_payout_schedules_figures(server: Server, fault_figures: FaultFigures) -> None:
    if fault_figures.payout_schedules < SCHEDULES + len(SPARK_SCHEDULES):
        pytest.skip("only part of the schedules ran")
    stats = server.admin.stats()
    audit = server.admin.audit()

    assert (fault_figures.double_payments, fault_figures.lost_payments) == (0, 0)
    # Across the whole sandbox: no agent got anything it was not owed, and the treasury paid
    # out exactly the sum of what was owed.
    assert server.admin.balances() == server.owed
    assert server.treasury_usdc - audit["treasury_usdc"] == sum(server.owed.values(), Decimal(0))
    # Every kind of fault was met, and the lookup path really settled unknown outcomes.
    assert sorted(kind for kind in INJECTED_KINDS if fault_figures.faults[kind] > 0) == sorted(
        INJECTED_KINDS
    )
    assert fault_figures.unknown_outcomes > 0
    assert fault_figures.found_paid_by_lookup > 0
    assert fault_figures.top_ups > 0
    assert stats["replays"] > 0
