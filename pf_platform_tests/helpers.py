"""Helpers for tests that run the payout job through Dagster."""

from __future__ import annotations

from decimal import Decimal

import dagster as dg

from pf_platform.definitions import build_definitions
from pf_platform.resources.lake import LakeResource


def run_day(day: str, label_set=None, instance=None) -> dg.ExecuteInProcessResult:
    """Materializes one partition of payout_job with the current environment's resources."""
    job = build_definitions("local").resolve_job_def("payout_job")
    run_config = {}
    if label_set is not None:
        run_config = {"resources": {"labeling_task": {"config": {"label_set": list(label_set)}}}}
    return job.execute_in_process(
        partition_key=day,
        run_config=run_config,
        instance=instance or dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
    )


def materialization(result: dg.ExecuteInProcessResult, node: str, asset: str) -> dict:
    """The metadata of one asset's materialization in a run, as plain values."""
    for event in result.asset_materializations_for_node(node):
        if event.asset_key.to_user_string() == asset:
            return {key: value.value for key, value in event.metadata.items()}
    raise AssertionError(f"{asset} was not materialized")


def ledger_paid_by_agent(days) -> dict[str, Decimal]:
    """Sum of succeeded ledger rows per agent over the given days."""
    ledger = LakeResource().ledger()
    paid: dict[str, Decimal] = {}
    for day in days:
        for row in ledger.read(day):
            if row.status == "succeeded":
                paid[row.agent_id] = paid.get(row.agent_id, Decimal(0)) + row.amount_usdc
    return paid
