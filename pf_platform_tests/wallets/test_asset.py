"""agent_wallets through Dagster: materialization, its metadata, the schedule and freshness.

Contract: the asset (group ``wallets``, not partitioned) writes agents.wallets under the lake
resource's root and reports agents seen, inserted, updated, unchanged, pages, seconds and the
table version; ``wallet_snapshot_job`` runs it every five minutes; it is stale after ten.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import dagster as dg

from pf_platform.assets.wallets.schedules import agent_wallets_schedule, wallet_snapshot_job
from pf_platform.assets.wallets.snapshot import agent_wallets
from pf_platform.resources.lake import LakeResource
from pf_platform.resources.payments.resource import PurpleFleaResource
from pf_platform.wallets.table import read_as_of, wallets_uri


def _materialize(wallets, lake_root: str, page_size: int = 1000) -> dict:
    result = dg.materialize(
        [agent_wallets],
        resources={
            "lake": LakeResource(root=lake_root),
            "purple_flea": PurpleFleaResource(
                base_url=wallets.sandbox.base_url, api_key=wallets.sandbox.key
            ),
        },
        run_config={"ops": {"agent_wallets": {"config": {"page_size": page_size}}}},
        instance=dg.DagsterInstance.ephemeral(),
    )
    assert result.success
    [event] = result.asset_materializations_for_node("agent_wallets")
    return {key: value.value for key, value in event.metadata.items()}


def test_materializations_upsert_and_report_what_they_did(wallets, tmp_path):
    agents = [wallets.agent(index) for index in range(12)]
    wallets.register(*agents)
    wallets.pay(agents[0], "1.25")
    lake_root = str(tmp_path / "lake")
    total = wallets.agent_count()
    usdc_total = sum((row["usdc"] for row in wallets.all_listed().values()), Decimal(0))

    first = _materialize(wallets, lake_root, page_size=5)

    assert first["agents_seen"] == first["inserted"] == total
    assert (first["updated"], first["unchanged"], first["duplicates_dropped"]) == (0, 0, 0)
    assert first["pages"] == -(-total // 5)
    assert (first["table_version"], first["committed_new_version"]) == (1, True)
    assert first["seconds"] > 0
    assert Decimal(first["usdc_total"]) == usdc_total
    assert first["table_uri"] == wallets_uri(lake_root)

    wallets.pay(agents[1], "2")
    second = _materialize(wallets, lake_root)

    assert (second["inserted"], second["updated"], second["unchanged"]) == (0, 1, total - 1)
    assert (second["pages"], second["table_version"]) == (-(-total // 1000), 2)
    rows = read_as_of(wallets_uri(lake_root), agents=agents[:2]).rows.to_pylist()
    assert [(row["agent_id"], row["usdc"]) for row in rows] == [
        (agents[0], Decimal("1.25")),
        (agents[1], Decimal(2)),
    ]


def test_the_asset_is_a_group_of_its_own_with_a_freshness_policy():
    spec = agent_wallets.specs_by_key[dg.AssetKey("agent_wallets")]

    assert spec.group_name == "wallets"
    assert agent_wallets.partitions_def is None
    assert spec.freshness_policy == dg.FreshnessPolicy.time_window(
        fail_window=timedelta(minutes=10), warn_window=timedelta(minutes=5)
    )


def test_the_schedule_runs_the_snapshot_job_every_five_minutes():
    defs = dg.Definitions(
        assets=[agent_wallets],
        jobs=[wallet_snapshot_job],
        schedules=[agent_wallets_schedule],
        resources={
            "lake": LakeResource(root="unused"),
            "purple_flea": PurpleFleaResource(api_key="pf_test_unused"),
        },
    )
    job = defs.resolve_job_def("wallet_snapshot_job")
    schedule = defs.resolve_schedule_def("agent_wallets_schedule")

    assert schedule.cron_schedule == "*/5 * * * *"
    assert schedule.job_name == "wallet_snapshot_job"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    assert job.asset_layer.executable_asset_keys == {dg.AssetKey("agent_wallets")}
    [request] = schedule.evaluate_tick(dg.build_schedule_context()).run_requests
    assert request.job_name in (None, "wallet_snapshot_job")
