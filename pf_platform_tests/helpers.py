"""Helpers for tests that run the payout job through Dagster."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from decimal import Decimal

import dagster as dg

from pf_platform.definitions import build_definitions
from pf_platform.resources.lake import LakeResource


def run_day(
    day: str, label_set=None, instance=None, *, approve: bool = False, **resource_config
) -> dg.ExecuteInProcessResult:
    """Materializes one partition of payout_job with the current environment's resources.

    Args:
        day: the partition.
        label_set: the task's labels, when not the default.
        instance: the Dagster instance; a fresh ephemeral one when None.
        approve: approve spend over the caps for this run.
        **resource_config: run config per resource key, e.g. ``purple_flea={"batch_size": 1}``.
    """
    job = build_definitions("local").resolve_job_def("payout_job")
    resources = {key: {"config": dict(value)} for key, value in resource_config.items()}
    if "purple_flea" in resources:
        # Run config replaces the resource's config, so the key comes along as an env reference.
        resources["purple_flea"]["config"].setdefault("api_key", {"env": "PF_API_KEY"})
    if label_set is not None:
        resources.setdefault("labeling_task", {"config": {}})["config"]["label_set"] = list(
            label_set
        )
    run_config: dict = {"resources": resources}
    if approve:
        run_config["ops"] = {"transfer_results": {"config": {"approve_spend_over_limits": True}}}
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


def run_twice_at_once(target: Callable[..., None], *args: object, timeout: float = 240) -> list:
    """Runs ``target(*args, barrier, results)`` in two spawned processes released together.

    Each child waits on ``barrier`` before its racing step and puts its outcome in ``results``;
    both must exit 0. Returns the two outcomes in the order they arrived.
    """
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(2), context.Queue()
    children = [context.Process(target=target, args=(*args, barrier, results)) for _ in range(2)]
    for child in children:
        child.start()
    for child in children:
        child.join(timeout=timeout)
    assert [child.exitcode for child in children] == [0, 0]
    return [results.get(timeout=5) for _ in children]
