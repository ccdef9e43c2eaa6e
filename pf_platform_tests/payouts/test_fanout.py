"""The two fan-outs against a real sandbox: same keys, same outcomes, one budget.

Contract: a Spark task that crashes after its requests went out is retried by Spark and pays
nothing twice (the retry's requests are answered as replays); Spark's Python workers run the
project's interpreter; clients that share a rate limit stay inside it together, in one process or
in several Spark tasks, and a client with no limit of its own still pays everything by honouring
the API's 429s.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from pyspark import cloudpickle
from pyspark.sql import SparkSession

from pf_platform.payouts.execution import pay_planned
from pf_platform.payouts.fanout import FanOut, InProcessFanOut, SparkFanOut, settle_partition
from pf_platform.payouts.ledger import SUCCEEDED, Ledger
from pf_platform.payouts.planning import plan_payouts
from pf_platform.resources.payments.client import ClientSettings, RateLimit
from pf_platform.resources.spark import SparkResource, local_spark_config, worker_python

DAY = "2026-11-20"
KIND = "labeling"

# Spark workers unpickle the test's partition function; this module is not installed, so it
# travels by value rather than by import.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def crash_once_after_sending(markers: Path):
    """A partition function that sends its whole slice, then dies on its first attempt."""

    def run(plan, settings, batch_size, run_id) -> Iterator:
        frames = list(settle_partition(plan, settings, batch_size, run_id))
        marker = markers / f"crashed-{plan[0].idempotency_key.replace(':', '_')}"
        if not marker.exists():
            marker.write_text("sent, then crashed\n")
            raise RuntimeError("injected crash after the slice's requests went out")
        yield from frames

    return run


def owed_to(agents: list[str]) -> dict[str, Decimal]:
    return {agent: Decimal(n % 97 + 1).scaleb(-4) for n, agent in enumerate(agents)}


def pay(ledger: Ledger, fan_out: FanOut, owed: dict[str, Decimal], batch_size: int):
    plan = plan_payouts(
        owed, ledger.read(DAY, KIND), payout_kind=KIND, partition_date=DAY, batch_size=batch_size
    )
    return plan, pay_planned(
        ledger, fan_out, plan.transfers, partition_date=DAY, payout_kind=KIND, run_id="run-1"
    )


def settings_for(sandbox, **options) -> ClientSettings:
    return ClientSettings(sandbox.base_url, sandbox.key, **options)


def test_spark_task_crashing_after_sending_is_retried_and_pays_once(
    sandbox, spark: SparkSession, tmp_path: Path
):
    agents = [f"crash-{n:04d}" for n in range(1200)]
    sandbox.register(agents)
    owed = owed_to(agents)
    ledger = Ledger(str(tmp_path / "transactions"))
    fan_out = SparkFanOut(
        lambda: spark,
        settings_for(sandbox, concurrency=4),
        batch_size=100,
        partitions=2,
        partition_fn=crash_once_after_sending(tmp_path),
    )

    plan, report = pay(ledger, fan_out, owed, batch_size=100)

    # Both tasks really crashed once after sending their six batches of 100.
    assert len(list(tmp_path.glob("crashed-*"))) == 2
    stats = sandbox.stats()
    assert stats["transfers_committed"] == 1200
    assert stats["replays"] == 1200
    assert sandbox.balances() == owed
    rows = ledger.read(DAY, KIND)
    assert len(rows) == 1200
    assert {row.status for row in rows} == {SUCCEEDED}
    assert all(row.tx_id for row in rows)
    # The retry found every key already paid: confirmed, not paid again.
    assert report.confirmed_keys == {t.idempotency_key for t in plan.transfers}
    assert report.confirmed() == sum(owed.values(), Decimal(0))
    assert report.paid() == 0

    replan, again = pay(ledger, fan_out, owed, batch_size=100)

    assert (replan.transfers, again.transfers_sent, again.rows) == ([], 0, [])
    assert sandbox.stats()["transfers_committed"] == 1200


def test_both_fan_outs_pay_the_same_plan_identically(sandbox, spark: SparkSession, tmp_path: Path):
    agents = [f"same-{n:03d}" for n in range(450)]
    sandbox.register(agents)
    halves = (
        {agent: owed_to(agents)[agent] for agent in agents[:225]},
        {agent: owed_to(agents)[agent] for agent in agents[225:]},
    )
    settings = settings_for(sandbox, concurrency=4)

    _, local = pay(
        Ledger(str(tmp_path / "a")), InProcessFanOut(settings.build, 50, 4), halves[0], 50
    )
    _, remote = pay(
        Ledger(str(tmp_path / "b")), SparkFanOut(lambda: spark, settings, 50, 3), halves[1], 50
    )

    for report, half in ((local, halves[0]), (remote, halves[1])):
        assert report.transfers_sent == len(half) == 225
        assert report.requests_sent == 5
        assert report.paid() == sum(half.values(), Decimal(0))
        assert {row.status for row in report.rows} == {SUCCEEDED}
    assert sandbox.balances() == owed_to(agents)
    assert sandbox.stats()["transfers_committed"] == 450


def test_spark_workers_run_the_project_interpreter(spark: SparkSession, monkeypatch):
    monkeypatch.delenv("PYSPARK_PYTHON", raising=False)

    resource = SparkResource(spark_config=local_spark_config())
    session = resource.spark_session

    def where(frames):
        import os
        import sys

        import pandas as pd

        for _ in frames:
            yield pd.DataFrame({"python": [sys.executable], "pid": [os.getpid()]})

    found = session.range(0, 2, 1, 2).mapInPandas(where, "python string, pid long").collect()
    assert resource.worker_python == sys.executable
    assert {row.python for row in found} == {worker_python()} == {sys.executable}
    assert all(row.pid != __import__("os").getpid() for row in found)


RPM, BURST = 600, 10
REQUESTS = 40


def limited(sandbox) -> None:
    sandbox.call("POST", "/admin/faults", {"rate_limit_rpm": RPM, "burst": BURST})


def balances_unlimited(sandbox) -> dict[str, Decimal]:
    """The balances, read once the limit is lifted: the run may have left its bucket empty."""
    sandbox.call("POST", "/admin/faults", {"rate_limit_rpm": 0})
    return sandbox.balances()


@pytest.mark.parametrize("where", ["in_process", "spark"])
def test_clients_sharing_a_rate_limit_stay_inside_it(
    sandbox, spark: SparkSession, tmp_path: Path, where: str
):
    agents = [f"paced-{n:03d}" for n in range(REQUESTS)]
    sandbox.register(agents)
    limited(sandbox)
    # 90% of the server's budget: the client's bucket and the server's start at different
    # moments, and a margin keeps a request that arrives a millisecond early from a 429.
    settings = settings_for(sandbox, concurrency=8, rate_limit=RateLimit(RPM * 0.9, BURST - 1))
    fan_out: FanOut = (
        InProcessFanOut(settings.build, 1, 8)
        if where == "in_process"
        else SparkFanOut(lambda: spark, settings, 1, partitions=2)
    )
    floor = settings.rate_limit.floor_seconds(REQUESTS)

    started = time.perf_counter()
    _, report = pay(Ledger(str(tmp_path / "t")), fan_out, owed_to(agents), batch_size=1)
    elapsed = time.perf_counter() - started

    stats = sandbox.stats()
    assert stats["responses_429"] == 0
    assert stats["transfers_committed"] == REQUESTS == report.requests_sent
    assert balances_unlimited(sandbox) == owed_to(agents)
    # The budget really paced the sends: no faster than its floor allows.
    assert elapsed >= floor * 0.95
    assert floor == pytest.approx((REQUESTS - (BURST - 1)) * 60 / (RPM * 0.9))


def test_a_client_without_a_limit_pays_everything_by_honouring_429s(sandbox, tmp_path: Path):
    agents = [f"eager-{n:03d}" for n in range(REQUESTS)]
    sandbox.register(agents)
    limited(sandbox)
    settings = settings_for(sandbox, concurrency=8, max_attempts=30, backoff_max_s=0.5)

    _, report = pay(
        Ledger(str(tmp_path / "t")), InProcessFanOut(settings.build, 1, 8), owed_to(agents), 1
    )

    stats = sandbox.stats()
    assert stats["responses_429"] > 0
    assert report.requests_sent == REQUESTS + stats["responses_429"]
    assert stats["transfers_committed"] == REQUESTS
    assert balances_unlimited(sandbox) == owed_to(agents)


def test_a_rate_limit_shared_by_n_clients_adds_up_to_the_whole():
    whole = RateLimit(1000, 500)

    parts = [whole.share(4) for _ in range(4)]

    assert sum(part.requests_per_minute for part in parts) == 1000
    assert sum(part.burst for part in parts) == 500
    assert whole.share(3).burst == 166
    assert whole.floor_seconds(1000) == 30.0
    assert whole.floor_seconds(400) == 0.0
    with pytest.raises(ValueError, match="burst >= 1"):
        RateLimit(1000, 0)
    shared = ClientSettings("http://127.0.0.1:1", "pf_test_x", concurrency=32, rate_limit=whole)
    assert (shared.share(4).concurrency, shared.share(4).rate_limit) == (8, RateLimit(250, 125))
    assert "pf_test_x" not in repr(shared)


def test_a_plan_made_before_another_run_paid_sends_only_what_is_still_unpaid(
    sandbox, tmp_path: Path
):
    agents = [f"stale-{n}" for n in range(5)]
    sandbox.register(agents)
    ledger = Ledger(str(tmp_path / "t"))
    owed = owed_to(agents)
    # Planned from an empty ledger, as a second run of the day may have done...
    stale = plan_payouts(owed, [], payout_kind=KIND, partition_date=DAY, batch_size=2)
    settings = settings_for(sandbox, concurrency=2)
    # ...while the first run paid three of the agents under the same keys.
    pay(ledger, InProcessFanOut(settings.build, 2, 2), {a: owed[a] for a in agents[:3]}, 2)
    before = sandbox.stats()

    report = pay_planned(
        ledger,
        InProcessFanOut(settings.build, 2, 2),
        stale.transfers,
        partition_date=DAY,
        payout_kind=KIND,
        run_id="run-2",
    )

    after = sandbox.stats()
    assert report.transfers_sent == 2
    assert {row.agent_id for row in report.rows} == set(agents[3:])
    assert after["replays"] == before["replays"]
    assert after["transfers_committed"] == 5
    assert sandbox.balances() == owed
