"""Benchmark of the transfer phase against the sandbox, next to the floor the API sets.

Run it with ``python -m pf_platform.bench.transfers`` (``--help`` lists the knobs). Every request
to the sandbox waits ``--latency-ms`` before it is handled, as a remote API would. Two parts:

**Fan-out** (``--agents``, default 100K, no rate limit, at most ``--concurrency`` requests in
flight), four ways of paying every agent once, each under its own keys:

(a) one request per agent, one after another: timed on ``--sample`` agents and extrapolated;
(b) the usual notebook pattern: a Spark job whose partitions each send 500-agent batches one
    after another with a blocking client;
(c) our in-process fan-out (``InProcessFanOut``): 1,000-transfer batches, concurrency requests
    in flight;
(d) our Spark fan-out (``SparkFanOut``): the same batches from one task per core, each task with
    its share of the concurrency.

For (c) and (d) the transfer phase (sending and settling every batch) is timed apart from the
ledger's Delta commits around it, and both are printed.

**Rate limit** (``--limited-agents``, default 1M, registered in bulk): the sandbox allows
``--rpm`` requests per minute with bursts of ``--burst``; the in-process fan-out spends a
budget of the same shape. The floor is the time the API's own token bucket needs for that many
requests, plus one request's latency; the target is 1.1x the floor, no failed transfer and at
most 1% of requests answered 429.

**Shape check** (``--shape-batch``, default 100): (c) and (e) again with as many requests, each
of 100 transfers. With full batches the sandbox's CPU (one Python process over SQLite) sets the
pace on this machine, not latency or the limit; with small batches it does not, which shows
how close the fan-out and the client-side budget come to their floors.

Each row prints wall time, transfers per second, 429s and the floor.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from pathlib import Path

import click
import httpx
import simplejson

from pf_platform.bench.common import (
    SandboxAdmin,
    cpu_seconds,
    peak_rss_mib,
    process_cpu_seconds,
)
from pf_platform.payouts.execution import OnSettled, SettlementReport, pay_planned
from pf_platform.payouts.fanout import FanOut, InProcessFanOut, SparkFanOut
from pf_platform.payouts.ledger import SUCCEEDED, Ledger, LedgerRow
from pf_platform.payouts.planning import PlannedTransfer, plan_payouts
from pf_platform.resources.payments.client import ClientSettings, RateLimit
from pf_platform.resources.payments.models import MAX_BATCH_SIZE
from pf_platform.sandbox.server import SandboxProcess

DAY = "2026-12-01"
AMOUNT = Decimal("0.000001")
NOTEBOOK_BATCH = 500


@dataclass
class Row:
    """One line of the results table."""

    name: str
    transfers: int
    seconds: float
    floor_seconds: float
    responses_429: int
    failed: int
    note: str = ""

    def line(self) -> str:
        rate = self.transfers / self.seconds if self.seconds else float("inf")
        ratio = self.seconds / self.floor_seconds if self.floor_seconds else float("nan")
        return (
            f"| {self.name} | {self.transfers:,} | {self.seconds:,.2f} | {rate:,.0f} | "
            f"{self.responses_429:,} | {self.failed:,} | {self.floor_seconds:,.2f} | "
            f"{ratio:,.2f}x | {self.note} |"
        )


HEADER = (
    "| run | transfers | wall s | transfers/s | 429s | failed | floor s | vs floor | note |\n"
    "|---|---:|---:|---:|---:|---:|---:|---:|---|"
)


@dataclass
class TimedFanOut:
    """Wraps a fan-out to time its transfer phase apart from the ledger commits around it."""

    inner: FanOut
    seconds: float = 0.0

    def settle(
        self,
        planned: Sequence[PlannedTransfer],
        intents: dict[str, LedgerRow],
        *,
        run_id: str,
        on_settled: OnSettled,
    ) -> SettlementReport:
        started = time.perf_counter()
        try:
            return self.inner.settle(planned, intents, run_id=run_id, on_settled=on_settled)
        finally:
            self.seconds = time.perf_counter() - started


def latency_floor(requests: int, concurrency: int, latency_s: float) -> float:
    """The least time ``requests`` take with ``concurrency`` in flight and a fixed latency."""
    return math.ceil(requests / concurrency) * latency_s


def plan(agent_ids: list[str], kind: str, batch_size: int) -> list[PlannedTransfer]:
    owed = dict.fromkeys(agent_ids, AMOUNT)
    return plan_payouts(
        owed, [], payout_kind=kind, partition_date=DAY, batch_size=batch_size
    ).transfers


def run_fan_out(
    name: str,
    fan_out: FanOut,
    agent_ids: list[str],
    kind: str,
    ledger: Ledger,
    admin: SandboxAdmin,
    floor: float,
    batch_size: int = MAX_BATCH_SIZE,
) -> tuple[Row, Row]:
    """Plans and pays every agent once; returns the transfer phase row and the whole-run row."""
    before = admin.stats()
    planned = plan(agent_ids, kind, batch_size)
    timed = TimedFanOut(fan_out)
    cpu, server_cpu = cpu_seconds(), process_cpu_seconds(admin.server_pid)
    started = time.perf_counter()
    report = pay_planned(
        ledger,
        timed,
        planned,
        partition_date=DAY,
        payout_kind=kind,
        run_id=f"bench-{kind}",
    )
    total = time.perf_counter() - started
    cpu, server_cpu = cpu_seconds() - cpu, process_cpu_seconds(admin.server_pid) - server_cpu
    after = admin.stats()
    responses_429 = after["responses_429"] - before["responses_429"]
    failed = sum(1 for row in report.rows if row.status != SUCCEEDED)
    committed = after["transfers_committed"] - before["transfers_committed"]
    if committed != len(planned) or failed:
        raise click.ClickException(
            f"{name}: {committed:,} transfers committed and {failed:,} not succeeded for "
            f"{len(planned):,} planned"
        )
    phase = Row(f"{name}: transfer phase", len(planned), timed.seconds, floor, responses_429, 0)
    whole = Row(
        f"{name}: with ledger commits",
        len(planned),
        total,
        floor,
        responses_429,
        0,
        note=(
            f"{report.requests_sent:,} requests; CPU {cpu:.1f} s here, {server_cpu:.1f} s in "
            "the sandbox"
        ),
    )
    return phase, whole


def sequential(base_url: str, key: str, agent_ids: list[str], sample: int) -> tuple[float, int]:
    """Seconds for ``sample`` one-transfer requests sent one after another, and the count."""
    chosen = agent_ids[:sample]
    with httpx.Client(
        base_url=base_url,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        timeout=60,
        trust_env=False,
    ) as client:
        started = time.perf_counter()
        for agent_id in chosen:
            body = {
                "transfers": [
                    {
                        "recipient_agent_id": agent_id,
                        "amount_usdc": AMOUNT,
                        "memo": "benchmark (a)",
                        "idempotency_key": f"bench-a:{DAY}:{agent_id}",
                    }
                ]
            }
            client.post(
                "/wallet/batch-transfer", content=simplejson.dumps(body, use_decimal=True)
            ).raise_for_status()
        return time.perf_counter() - started, len(chosen)


def notebook_partition(base_url: str, key: str):
    """The partition function of the notebook pattern: 500-agent batches, one after another."""

    def send(frames: Iterator) -> Iterator:
        import httpx
        import pandas as pd
        import simplejson

        agents = [agent for frame in frames for agent in frame["agent_id"]]
        sent = 0
        with httpx.Client(
            base_url=base_url,
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
            timeout=60,
            trust_env=False,
        ) as client:
            for start in range(0, len(agents), NOTEBOOK_BATCH):
                transfers = [
                    {
                        "recipient_agent_id": agent,
                        "amount_usdc": AMOUNT,
                        "memo": "benchmark (b)",
                        "idempotency_key": f"bench-b:{DAY}:{agent}",
                    }
                    for agent in agents[start : start + NOTEBOOK_BATCH]
                ]
                response = client.post(
                    "/wallet/batch-transfer",
                    content=simplejson.dumps({"transfers": transfers}, use_decimal=True),
                )
                response.raise_for_status()
                sent += sum(1 for result in response.json()["results"] if result["success"])
        yield pd.DataFrame({"sent": [sent]})

    return send


def spark_session():
    from pyspark.sql import SparkSession

    from pf_platform.resources.spark import local_spark_config, pin_worker_python

    pin_worker_python()
    builder = SparkSession.builder
    for name, value in local_spark_config().items():
        builder = builder.config(name, value)
    return builder.getOrCreate()


def fan_out_part(
    root: Path, agents: int, concurrency: int, latency_ms: int, sample: int, spark: bool
) -> list[Row]:
    agent_ids = [f"agent-{index:07d}" for index in range(agents)]
    latency = latency_ms / 1000
    requests = math.ceil(agents / MAX_BATCH_SIZE)
    rows: list[Row] = []
    with SandboxProcess(root / "fan-out" / "ledger.db", treasury_usdc=10**9) as sandbox:
        admin = SandboxAdmin(sandbox.base_url, sandbox.treasury_key, sandbox.pid)
        started = time.perf_counter()
        admin.register(agent_ids)
        click.echo(f"set-up: {agents:,} agents registered in {time.perf_counter() - started:.1f} s")
        admin.set_faults(latency_ms=latency_ms)
        settings = ClientSettings(sandbox.base_url, sandbox.treasury_key, concurrency=concurrency)

        seconds, count = sequential(sandbox.base_url, sandbox.treasury_key, agent_ids, sample)
        rows.append(
            Row(
                "(a) one request per agent, sequential",
                agents,
                seconds * agents / count,
                agents * latency,
                0,
                0,
                note=f"extrapolated from {count} requests ({seconds:.2f} s)",
            )
        )
        click.echo(rows[-1].line())

        session = spark_session() if spark else None
        if session is not None:
            parts = session.sparkContext.defaultParallelism
            import pandas as pd

            frame = session.createDataFrame(pd.DataFrame({"agent_id": agent_ids})).repartition(
                parts
            )
            before = admin.stats()
            started = time.perf_counter()
            sent = (
                frame.mapInPandas(
                    notebook_partition(sandbox.base_url, sandbox.treasury_key), "sent long"
                )
                .toPandas()["sent"]
                .sum()
            )
            seconds = time.perf_counter() - started
            after = admin.stats()
            batches = math.ceil(agents / NOTEBOOK_BATCH)
            rows.append(
                Row(
                    "(b) notebook: 500-agent batches in turn per Spark partition",
                    int(sent),
                    seconds,
                    latency_floor(batches, parts, latency),
                    after["responses_429"] - before["responses_429"],
                    agents - int(sent),
                    note=f"{parts} partitions; floor: {batches} requests, {parts} at a time",
                )
            )
            click.echo(rows[-1].line())

        floor = latency_floor(requests, concurrency, latency)
        ledger = Ledger(str(root / "fan-out" / "transactions"))
        for row in run_fan_out(
            "(c) in-process fan-out",
            InProcessFanOut(settings.build, MAX_BATCH_SIZE, concurrency),
            agent_ids,
            "bench-c",
            ledger,
            admin,
            floor,
        ):
            rows.append(row)
            click.echo(row.line())

        if session is not None:
            parts = session.sparkContext.defaultParallelism
            for row in run_fan_out(
                "(d) Spark fan-out",
                SparkFanOut(lambda: session, settings, MAX_BATCH_SIZE, partitions=parts),
                agent_ids,
                "bench-d",
                ledger,
                admin,
                floor,
            ):
                row.note = (row.note + f"; {parts} tasks").lstrip("; ")
                rows.append(row)
                click.echo(row.line())
        admin.close()
    return rows


def rate_limit_part(
    root: Path,
    agents: int,
    concurrency: int,
    latency_ms: int,
    rpm: int,
    burst: int,
    headroom: float,
) -> list[Row]:
    agent_ids = [f"agent-{index:07d}" for index in range(agents)]
    requests = math.ceil(agents / MAX_BATCH_SIZE)
    limit = RateLimit(rpm, burst)
    floor = limit.floor_seconds(requests) + latency_ms / 1000
    with SandboxProcess(root / "limited" / "ledger.db", treasury_usdc=10**9) as sandbox:
        admin = SandboxAdmin(sandbox.base_url, sandbox.treasury_key, sandbox.pid)
        started = time.perf_counter()
        admin.register(agent_ids)
        click.echo(f"set-up: {agents:,} agents registered in {time.perf_counter() - started:.1f} s")
        admin.set_faults(latency_ms=latency_ms, rate_limit_rpm=rpm, burst=burst)
        settings = ClientSettings(
            sandbox.base_url,
            sandbox.treasury_key,
            concurrency=concurrency,
            rate_limit=RateLimit(rpm * headroom, burst),
        )
        rows = list(
            run_fan_out(
                f"(e) in-process fan-out, {rpm:,} rpm / burst {burst}",
                InProcessFanOut(settings.build, MAX_BATCH_SIZE, concurrency),
                agent_ids,
                "bench-e",
                Ledger(str(root / "limited" / "transactions")),
                admin,
                floor,
            )
        )
        for row in rows:
            row.note = (row.note + f"; client budget {headroom:.0%} of the limit").lstrip("; ")
            click.echo(row.line())
        admin.close()
    return rows


def shape_part(
    root: Path,
    requests: tuple[int, int],
    batch_size: int,
    concurrency: int,
    latency_ms: int,
    rpm: int,
    burst: int,
    headroom: float,
) -> list[Row]:
    """(c) and (e) again with as many requests but ``batch_size`` transfers in each.

    With full batches the sandbox's own CPU (one Python process committing to SQLite) sets the
    pace; with small ones it does not, and the rows show how close the fan-out and the client
    budget come to the floors that latency and the rate limit set.
    """
    unlimited, limited = requests
    agent_ids = [f"agent-{index:07d}" for index in range(max(unlimited, limited) * batch_size)]
    rows: list[Row] = []
    with SandboxProcess(root / "shape" / "ledger.db", treasury_usdc=10**9) as sandbox:
        admin = SandboxAdmin(sandbox.base_url, sandbox.treasury_key, sandbox.pid)
        admin.register(agent_ids)
        ledger = Ledger(str(root / "shape" / "transactions"))
        admin.set_faults(latency_ms=latency_ms)
        settings = ClientSettings(sandbox.base_url, sandbox.treasury_key, concurrency=concurrency)
        if unlimited:
            rows += run_fan_out(
                f"(c') in-process fan-out, {batch_size}-transfer batches",
                InProcessFanOut(settings.build, batch_size, concurrency),
                agent_ids[: unlimited * batch_size],
                "bench-c2",
                ledger,
                admin,
                latency_floor(unlimited, concurrency, latency_ms / 1000),
                batch_size,
            )
        if limited:
            admin.set_faults(rate_limit_rpm=rpm, burst=burst)
            budget = replace(settings, rate_limit=RateLimit(rpm * headroom, burst))
            rows += run_fan_out(
                f"(e') in-process fan-out, {rpm:,} rpm / burst {burst}, {batch_size}-transfer "
                "batches",
                InProcessFanOut(budget.build, batch_size, concurrency),
                agent_ids[: limited * batch_size],
                "bench-e2",
                ledger,
                admin,
                RateLimit(rpm, burst).floor_seconds(limited) + latency_ms / 1000,
                batch_size,
            )
        for row in rows:
            click.echo(row.line())
        admin.close()
    return rows


@click.command()
@click.option("--agents", default=100_000, show_default=True, type=click.IntRange(0))
@click.option("--concurrency", default=32, show_default=True, type=click.IntRange(1))
@click.option("--latency-ms", default=200, show_default=True, type=click.IntRange(0))
@click.option("--sample", default=20, show_default=True, help="Requests timed for (a).")
@click.option("--spark/--no-spark", default=True, show_default=True, help="Run (b) and (d).")
@click.option("--limited-agents", default=1_000_000, show_default=True, type=click.IntRange(0))
@click.option("--rpm", default=1000, show_default=True, type=click.IntRange(1))
@click.option("--burst", default=500, show_default=True, type=click.IntRange(1))
@click.option(
    "--headroom",
    default=0.98,
    show_default=True,
    type=click.FloatRange(0.1, 1.0),
    help="Share of the limit the client spends, so requests at the edge are not refused.",
)
@click.option(
    "--shape-batch",
    default=100,
    show_default=True,
    type=click.IntRange(0, MAX_BATCH_SIZE),
    help="Batch size of the (c') and (e') rows; 0 skips them.",
)
def main(
    agents: int,
    concurrency: int,
    latency_ms: int,
    sample: int,
    spark: bool,
    limited_agents: int,
    rpm: int,
    burst: int,
    headroom: float,
    shape_batch: int,
) -> None:
    """Time the transfer fan-outs against the sandbox, next to the floor the API sets."""
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="pf-bench-transfers-") as folder:
        root = Path(folder)
        click.echo(HEADER)
        if agents:
            rows += fan_out_part(root, agents, concurrency, latency_ms, sample, spark)
        if limited_agents:
            rows += rate_limit_part(
                root, limited_agents, concurrency, latency_ms, rpm, burst, headroom
            )
        if shape_batch:
            requests = (
                math.ceil(agents / MAX_BATCH_SIZE),
                math.ceil(limited_agents / MAX_BATCH_SIZE),
            )
            rows += shape_part(
                root, requests, shape_batch, concurrency, latency_ms, rpm, burst, headroom
            )
    click.echo(f"\npeak RSS of this process: {peak_rss_mib():,.0f} MiB\n")
    click.echo(HEADER)
    for row in rows:
        click.echo(row.line())


if __name__ == "__main__":
    main()
