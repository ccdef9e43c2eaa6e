"""Where a plan's batches are sent from: this process, or Spark tasks.

Both fan-outs hand the same ``settle_plan`` the same transfers under the same keys; they differ
only in who runs it. In process, one client sends every batch with ``concurrency`` requests in
flight. On Spark, ``mapInPandas`` runs ``settle_partition`` in each of ``partitions`` tasks, each
with a client of its own that takes an equal share of the concurrency and of the rate limit.

A Spark task may run more than once: retried after a crash, or speculated. A second attempt
sends the keys the first one sent, and the API answers those with the stored outcome instead of
paying again, so what a task attempt did before dying costs nothing but a replay.

Outcomes of Spark tasks reach the ledger when the job ends. A job that fails, or a driver killed
while it runs, leaves the intents the driver wrote ahead ``pending``; the next run looks their
keys up before sending anything, as after any other crash.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import pyarrow as pa
import simplejson

from pf_platform.payouts.execution import OnSettled, SettlementReport, settle_plan
from pf_platform.payouts.ledger import LedgerRow
from pf_platform.payouts.planning import PlannedTransfer, plan_from_arrow, plan_to_arrow
from pf_platform.resources.payments.client import ClientSettings, PurpleFleaClient

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import SparkSession

OUTCOME = "outcome"
REPORT = "report"
# mapInPandas output: one row per settled transfer, plus one report row per task.
RESULT_SCHEMA = (
    "kind string, idempotency_key string, status string, tx_id string, error string, "
    "sent boolean, report string"
)


class SparkJobError(RuntimeError):
    """The Spark job of a fan-out failed; what its tasks sent is settled by the next run."""


class FanOut(Protocol):
    """Settles planned transfers whose intents are committed; see ``settle_plan``."""

    def settle(
        self,
        planned: Sequence[PlannedTransfer],
        intents: dict[str, LedgerRow],
        *,
        run_id: str,
        on_settled: OnSettled,
    ) -> SettlementReport: ...


@dataclass(frozen=True)
class InProcessFanOut:
    """Sends every batch from this process, ``concurrency`` requests in flight.

    Attributes:
        client_factory: builds the client (used as an async context manager).
        batch_size: transfers per request.
        concurrency: requests in flight at once.
    """

    client_factory: Callable[[], PurpleFleaClient]
    batch_size: int
    concurrency: int

    def settle(
        self,
        planned: Sequence[PlannedTransfer],
        intents: dict[str, LedgerRow],
        *,
        run_id: str,
        on_settled: OnSettled,
    ) -> SettlementReport:
        async def run() -> SettlementReport:
            async with self.client_factory() as client:
                return await settle_plan(
                    client,
                    planned,
                    intents,
                    batch_size=self.batch_size,
                    concurrency=self.concurrency,
                    run_id=run_id,
                    on_settled=on_settled,
                )

        return asyncio.run(run())


PartitionFn = Callable[..., Iterator["pd.DataFrame"]]


@dataclass(frozen=True)
class SparkFanOut:
    """Sends the batches from ``partitions`` Spark tasks at once, through ``mapInPandas``.

    Whole planned batches are dealt round-robin to the tasks, so each task sends the batches
    planning made. Each task's client takes ``settings.share(partitions)``: together the tasks
    never have more requests in flight, nor spend more of the rate limit, than ``settings``.

    Attributes:
        spark: returns the session (called only when there is something to send).
        settings: the client recipe shipped to every task.
        batch_size: transfers per request.
        partitions: tasks sending at once; 0 means the session's default parallelism. Keep it
            at most the cores the cluster gives the job: a task waiting for a core holds its
            share of the budget unused.
        partition_fn: the function run in each task; ``settle_partition`` unless a test wraps
            it to make a task fail.
    """

    spark: Callable[[], SparkSession]
    settings: ClientSettings
    batch_size: int
    partitions: int = 0
    partition_fn: PartitionFn | None = None

    def settle(
        self,
        planned: Sequence[PlannedTransfer],
        intents: dict[str, LedgerRow],
        *,
        run_id: str,
        on_settled: OnSettled,
    ) -> SettlementReport:
        if not planned:
            return SettlementReport()
        session = self.spark()
        parts = self.partitions or session.sparkContext.defaultParallelism
        parts = max(1, min(parts, len({t.batch_number for t in planned})))

        # One plan slice per task, as Arrow IPC bytes in a broadcast: a range of ``parts`` rows in
        # ``parts`` partitions gives each task exactly one slice number to pick up.
        slices = _deal(planned, parts)
        shipped = session.sparkContext.broadcast([_to_ipc(part) for part in slices])
        settings = self.settings.share(parts)
        batch_size = self.batch_size
        partition_fn = self.partition_fn or settle_partition

        def run_task(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
            for frame in frames:
                for number in frame["id"]:
                    plan = _from_ipc(shipped.value[int(number)])
                    yield from partition_fn(plan, settings, batch_size, run_id)

        from pyspark.errors import PySparkException

        try:
            rows = session.range(0, parts, 1, parts).mapInPandas(run_task, RESULT_SCHEMA).toArrow()
        except PySparkException as exc:
            raise SparkJobError(
                "the Spark job sending the batches failed after its task retries; none of its "
                "outcomes are recorded, so its transfers stay pending and the next run looks "
                f"their keys up before sending anything: {_first_line(exc)}"
            ) from exc
        finally:
            shipped.unpersist()

        report = SettlementReport()
        settled = []
        for row in rows.to_pylist():
            if row["kind"] == REPORT:
                _merge_report(report, simplejson.loads(row["report"]))
                continue
            intent = intents[row["idempotency_key"]]
            settled.append(
                intent.settle(
                    row["status"],
                    tx_id=row["tx_id"],
                    error=row["error"],
                    sent=row["sent"],
                    run_id=run_id,
                )
            )
        report.rows.extend(settled)
        on_settled(settled)
        return report


def settle_partition(
    plan: list[PlannedTransfer], settings: ClientSettings, batch_size: int, run_id: str
) -> Iterator[pd.DataFrame]:
    """Runs in a Spark task: settles one slice of the plan with a client of its own.

    Yields one frame: an outcome row per transfer and one report row for the task.
    """
    import pandas as pd

    # Fresh intents (attempts 0): the driver applies each outcome to the ledger's own row.
    intents = {transfer.idempotency_key: transfer.intent() for transfer in plan}

    async def run() -> SettlementReport:
        async with settings.build() as client:
            return await settle_plan(
                client,
                plan,
                intents,
                batch_size=batch_size,
                concurrency=settings.concurrency,
                run_id=run_id,
                on_settled=lambda rows: None,
            )

    report = asyncio.run(run())
    outcomes = [
        {
            "kind": OUTCOME,
            "idempotency_key": row.idempotency_key,
            "status": row.status,
            "tx_id": row.tx_id,
            "error": row.error,
            "sent": row.attempts > 0,
            "report": None,
        }
        for row in report.rows
    ]
    summary = {
        "transfers_sent": report.transfers_sent,
        "requests_sent": report.requests_sent,
        "reconciled": report.reconciled,
        "batch_latencies_ms": report.batch_latencies_ms,
        "stopped_reason": report.stopped_reason,
        "confirmed_keys": sorted(report.confirmed_keys),
    }
    outcomes.append(
        {
            "kind": REPORT,
            "idempotency_key": None,
            "status": None,
            "tx_id": None,
            "error": None,
            "sent": None,
            "report": simplejson.dumps(summary),
        }
    )
    yield pd.DataFrame(outcomes, columns=list(outcomes[0]))


def _deal(planned: Sequence[PlannedTransfer], parts: int) -> list[list[PlannedTransfer]]:
    """Whole batches, round-robin over ``parts`` slices, in batch order within each."""
    slices: list[list[PlannedTransfer]] = [[] for _ in range(parts)]
    numbers = sorted({transfer.batch_number for transfer in planned})
    slot = {number: index % parts for index, number in enumerate(numbers)}
    for transfer in sorted(planned, key=lambda t: (t.batch_number, t.idempotency_key)):
        slices[slot[transfer.batch_number]].append(transfer)
    return slices


def _to_ipc(plan: list[PlannedTransfer]) -> bytes:
    table = plan_to_arrow(plan)
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def _from_ipc(data: bytes) -> list[PlannedTransfer]:
    return plan_from_arrow(pa.ipc.open_stream(data).read_all())


def _merge_report(report: SettlementReport, part: dict[str, Any]) -> None:
    report.transfers_sent += part["transfers_sent"]
    report.requests_sent += part["requests_sent"]
    report.reconciled += part["reconciled"]
    report.batch_latencies_ms.extend(part["batch_latencies_ms"])
    report.confirmed_keys.update(part["confirmed_keys"])
    if report.stopped_reason is None:
        report.stopped_reason = part["stopped_reason"]


def _first_line(exc: Exception) -> str:
    # Spark's messages carry the whole worker traceback; the last line names the cause.
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    causes = [line for line in lines if "Error" in line or "Exception" in line]
    return (causes[-1] if causes else lines[0] if lines else type(exc).__name__)[:300]
