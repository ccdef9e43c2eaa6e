"""The payout ledger: every transfer intent, written before sending, with its outcome."""

import asyncio
import statistics
from collections import Counter, defaultdict
from decimal import Decimal

import dagster as dg

from pf_platform.assets.payouts.batches import PAYOUT_KIND, read_planned
from pf_platform.partitions import daily_partitions
from pf_platform.payouts.execution import SettlementReport, settle_plan
from pf_platform.payouts.ledger import FAILED, SUCCEEDED, UNSETTLED, Ledger, LedgerRow
from pf_platform.payouts.planning import RESUME, PlannedTransfer
from pf_platform.resources.lake import LakeResource
from pf_platform.resources.payments.resource import PurpleFleaResource

# Outcomes are committed to the ledger in groups of this many rows while a run is sending, so a
# run killed halfway leaves little for the next one to look up.
FLUSH_ROWS = 5000
TOP_EARNERS_SHOWN = 10


@dg.asset(
    partitions_def=daily_partitions,
    group_name="payouts",
    deps=["payout_batches"],
    kinds={"delta", "purpleflea"},
    pool="purple_flea_payouts",
    check_specs=[
        dg.AssetCheckSpec(
            "check_ledger_settled",
            asset="transfer_results",
            description="every transfer of the day has a known outcome (none pending or unknown)",
        ),
        dg.AssetCheckSpec(
            "check_no_failed_transfers",
            asset="transfer_results",
            description="no transfer of the day was refused by the API",
        ),
    ],
)
def transfer_results(
    context: dg.AssetExecutionContext, lake: LakeResource, purple_flea: PurpleFleaResource
):
    """The payout ledger for the day: one row per transfer intent with its outcome."""
    day = context.partition_key
    planned = read_planned(lake, day)
    ledger = lake.ledger()
    existing = {row.idempotency_key: row for row in ledger.read(day, PAYOUT_KIND)}

    # Write-ahead: every new intent is committed before any request can carry it.
    new_intents = [t.intent() for t in planned if t.idempotency_key not in existing]
    ledger.write_intents(new_intents)
    intents = {**existing, **{row.idempotency_key: row for row in new_intents}}
    context.log.info(
        "day %s: %d transfers to settle (%d new, %d resumed)",
        day,
        len(planned),
        len(new_intents),
        sum(1 for t in planned if t.action == RESUME),
    )

    report = _settle(context, purple_flea, ledger, planned, intents)

    rows = ledger.read(day, PAYOUT_KIND)
    unsettled = [row for row in rows if row.status in UNSETTLED]
    metadata = _metadata(report, rows, lake)
    if unsettled:
        raise dg.Failure(
            description=(
                f"{len(unsettled)} transfers of {day} have no known outcome; they are recorded "
                "as unknown and the next run looks them up before sending anything"
            ),
            metadata=metadata,
        )
    yield dg.MaterializeResult(metadata=metadata)
    yield _failed_check(rows)
    yield dg.AssetCheckResult(
        check_name="check_ledger_settled",
        passed=True,
        metadata={"rows": len(rows)},
    )


def _settle(
    context: dg.AssetExecutionContext,
    purple_flea: PurpleFleaResource,
    ledger: Ledger,
    planned: list[PlannedTransfer],
    intents: dict[str, LedgerRow],
) -> SettlementReport:
    buffer: list[LedgerRow] = []
    settled_count = 0

    def on_settled(rows: list[LedgerRow]) -> None:
        nonlocal settled_count
        buffer.extend(rows)
        settled_count += len(rows)
        if len(buffer) >= FLUSH_ROWS:
            flush()
            context.log.info("settled %d of %d transfers", settled_count, len(planned))

    def flush() -> None:
        ledger.record(buffer)
        buffer.clear()

    async def run() -> SettlementReport:
        async with purple_flea.get_client() as client:
            return await settle_plan(
                client,
                planned,
                intents,
                batch_size=purple_flea.batch_size,
                concurrency=purple_flea.concurrency,
                run_id=context.run.run_id,
                on_settled=on_settled,
            )

    try:
        return asyncio.run(run()) if planned else SettlementReport()
    finally:
        # Whatever is known is recorded, even when the run is failing.
        flush()


def _metadata(report: SettlementReport, rows: list[LedgerRow], lake: LakeResource) -> dict:
    paid_by_agent: dict[str, Decimal] = defaultdict(Decimal)
    for row in rows:
        if row.status == SUCCEEDED:
            paid_by_agent[row.agent_id] += row.amount_usdc
    paid_this_run = sum(
        (row.amount_usdc for row in report.rows if row.status == SUCCEEDED), Decimal(0)
    )
    latencies = sorted(report.batch_latencies_ms)
    top = sorted(paid_by_agent.items(), key=lambda item: (-item[1], item[0]))[:TOP_EARNERS_SHOWN]
    return {
        "transfers_sent": report.transfers_sent,
        "requests_sent": report.requests_sent,
        "reconciled_by_lookup": report.reconciled,
        "succeeded": report.count(SUCCEEDED),
        "failed": report.count(FAILED),
        "unknown": sum(1 for row in report.rows if row.status in UNSETTLED),
        "usdc_paid_this_run": str(paid_this_run),
        "agents_paid_this_run": len({r.agent_id for r in report.rows if r.status == SUCCEEDED}),
        "usdc_paid_for_day": str(sum(paid_by_agent.values(), Decimal(0))),
        "agents_paid_for_day": len(paid_by_agent),
        "batch_latency_ms_p50": statistics.median(latencies) if latencies else 0.0,
        "batch_latency_ms_max": latencies[-1] if latencies else 0.0,
        "top_earners": dg.MetadataValue.table(
            records=[
                dg.TableRecord({"agent_id": agent, "paid_usdc": str(amount)})
                for agent, amount in top
            ],
            schema=dg.TableSchema(
                columns=[
                    dg.TableColumn("agent_id", "string"),
                    dg.TableColumn("paid_usdc", "string"),
                ]
            ),
        ),
        "table": lake.uri("agents", "transactions"),
    }


def _failed_check(rows: list[LedgerRow]) -> dg.AssetCheckResult:
    # A refusal that a later transfer to the same agent made good no longer needs anyone.
    latest: dict[str, LedgerRow] = {}
    for row in sorted(rows, key=lambda row: row.sequence):
        latest[row.agent_id] = row
    failed = [row for row in latest.values() if row.status == FAILED]
    reasons = Counter(row.error for row in failed)
    return dg.AssetCheckResult(
        check_name="check_no_failed_transfers",
        passed=not failed,
        severity=dg.AssetCheckSeverity.ERROR,
        description=f"{len(failed)} transfers refused by the API",
        metadata={
            "failed": len(failed),
            "by_reason": dg.MetadataValue.json(dict(reasons)),
            "examples": dg.MetadataValue.md(
                "\n".join(
                    f"- {row.agent_id} {row.amount_usdc} USDC: {row.error}" for row in failed[:10]
                )
                or "-"
            ),
        },
    )
