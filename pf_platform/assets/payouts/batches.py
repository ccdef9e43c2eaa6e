"""Owed minus paid, split into batches of transfers with deterministic keys."""

from decimal import Decimal

import dagster as dg

from pf_platform.partitions import daily_partitions
from pf_platform.payouts.planning import (
    PlannedTransfer,
    plan_from_arrow,
    plan_payouts,
    plan_to_arrow,
)
from pf_platform.resources.lake import LakeResource
from pf_platform.resources.payments.resource import PurpleFleaResource

PAYOUT_KIND = "labeling"


def read_planned(lake: LakeResource, day: str) -> list[PlannedTransfer]:
    """The transfers payout_batches planned for a day."""
    table = lake.read_partition("agents", "payout_batches", day)
    if table is None:
        return []
    return sorted(plan_from_arrow(table), key=lambda t: t.idempotency_key)


@dg.asset(
    partitions_def=daily_partitions,
    group_name="payouts",
    deps=["agent_payout_summary"],
    kinds={"delta"},
)
def payout_batches(
    context: dg.AssetExecutionContext, lake: LakeResource, purple_flea: PurpleFleaResource
) -> dg.MaterializeResult:
    """Transfers still owed for the day (owed minus paid), in batches, each with its key."""
    day = context.partition_key
    summary = lake.read_partition("agents", "payout_summary", day)
    if summary is None:
        raise dg.Failure(f"agents.payout_summary has no rows for {day}: materialize it first")
    owed = {
        row["agent_id"]: row["amount_owed_usdc"]
        for row in summary.select(["agent_id", "amount_owed_usdc"]).to_pylist()
    }

    ledger_rows = lake.ledger().read(day, PAYOUT_KIND)
    plan = plan_payouts(
        owed,
        ledger_rows,
        payout_kind=PAYOUT_KIND,
        partition_date=day,
        batch_size=purple_flea.batch_size,
    )
    table = plan_to_arrow(plan.transfers)
    version = lake.overwrite_partition(
        "agents", "payout_batches", day, table.drop_columns(["partition_date"])
    )

    for agent_id, amount in plan.overpaid.items():
        context.log.warning("agent %s was paid %s USDC more than it is owed", agent_id, amount)
    planned_usdc = sum((t.amount_usdc for t in plan.transfers), Decimal(0))
    return dg.MaterializeResult(
        metadata={
            "transfers": len(plan.transfers),
            "batches": plan.batch_count,
            "resumed_transfers": sum(1 for t in plan.transfers if t.action == "resume"),
            "usdc_planned": str(planned_usdc),
            "usdc_already_paid": str(sum(plan.paid.values(), Decimal(0))),
            "overpaid_agents": len(plan.overpaid),
            "table": lake.uri("agents", "payout_batches"),
            "delta_version": version,
        }
    )
