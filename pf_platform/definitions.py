"""The one Definitions object of pf_platform, built for the active profile."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import dagster as dg

from pf_platform.assets.escrow import (
    ESCROW_ASSETS,
    MlflowResource,
    escrow_release_job,
    escrows_job,
)
from pf_platform.assets.labeling.submissions import label_submissions
from pf_platform.assets.labeling.validation import validate_labels
from pf_platform.assets.payouts.batches import payout_batches
from pf_platform.assets.payouts.summary import agent_payout_summary
from pf_platform.assets.payouts.transfers import transfer_results
from pf_platform.assets.wallets.schedules import agent_wallets_schedule, wallet_snapshot_job
from pf_platform.assets.wallets.snapshot import agent_wallets
from pf_platform.jobs import payout_job
from pf_platform.resources.databricks import (
    PROFILE,
    databricks_settings,
    databricks_step_launcher,
)
from pf_platform.resources.labeling import LabelingTaskResource
from pf_platform.resources.lake import LakeResource
from pf_platform.resources.payments.resource import PurpleFleaResource
from pf_platform.resources.policy import PayoutPolicyResource
from pf_platform.resources.spark import SparkResource, local_spark_config
from pf_platform.resources.sql import SqlEngineResource
from pf_platform.schedules import nightly_payout_schedule
from pf_platform.sensors import escrow_bounty_sensor, escrow_release_sensor
from pf_platform.settings import profile, sql_engine

# A day's payouts are due by the next night's run; a partition older than that is stale.
DAILY_FRESHNESS = dg.FreshnessPolicy.time_window(
    fail_window=timedelta(hours=48), warn_window=timedelta(hours=30)
)


def _local_resources() -> dict[str, Any]:
    # One partial instance under its own key and inside sql_engine: Dagster hands both the same
    # resource, so run config for `pyspark` reaches the SQL engine too. The session starts only
    # when something asks for it (the spark engine or fan-out), never for duckdb in process.
    pyspark = SparkResource.configure_at_launch(spark_config=local_spark_config())
    return {
        "purple_flea": PurpleFleaResource(api_key=dg.EnvVar("PF_API_KEY")),
        "lake": LakeResource(),
        "mlflow": MlflowResource(),
        "pyspark": pyspark,
        "sql_engine": SqlEngineResource(engine=sql_engine(), pyspark=pyspark),
        # No launcher: the payout step runs in the run's own process.
        "step_launcher": dg.ResourceDefinition.none_resource(),
    }


def _databricks_resources() -> dict[str, Any]:
    settings = databricks_settings()
    # On the cluster getOrCreate hands back the cluster's own session and its settings.
    pyspark = SparkResource(spark_config={})
    return {
        "purple_flea": PurpleFleaResource(
            api_key=dg.EnvVar("PF_API_KEY"), base_url=settings.api_base_url, fan_out="spark"
        ),
        "lake": LakeResource(root=settings.lake_root, storage_options=settings.storage_options),
        "mlflow": MlflowResource(tracking_uri=settings.mlflow_tracking_uri),
        "pyspark": pyspark,
        "sql_engine": SqlEngineResource(engine="spark", pyspark=pyspark),
        "step_launcher": databricks_step_launcher(settings),
    }


def build_resources(active_profile: str) -> dict[str, Any]:
    """The resources of a profile; asset code never asks which profile it runs in.

    Every profile binds the same keys, so a job that resolves in one resolves in the other.

    Raises:
        ValueError: for an unknown profile.
        DatabricksProfileError: when the databricks profile's environment is incomplete.
    """
    by_profile = {"local": _local_resources, PROFILE: _databricks_resources}
    if active_profile not in by_profile:
        raise ValueError(
            f"unknown profile {active_profile!r}; expected one of {sorted(by_profile)}"
        )
    return {
        # TODO: a cloud landing root for the databricks profile (label files are read from a
        # folder on the Dagster host in both profiles); removable when label_submissions reads
        # object storage.
        "labeling_task": LabelingTaskResource(),
        "payout_policy": PayoutPolicyResource(),
        **by_profile[active_profile](),
    }


def build_definitions(active_profile: str | None = None) -> dg.Definitions:
    """Assemble the code location for a profile (default: ``PF_PROFILE``)."""
    assets = dg.map_asset_specs(
        lambda spec: spec.replace_attributes(freshness_policy=DAILY_FRESHNESS),
        [
            label_submissions,
            validate_labels,
            agent_payout_summary,
            payout_batches,
            transfer_results,
        ],
    )
    return dg.Definitions(
        # agent_wallets keeps its own 5/10-minute freshness policy; the escrow assets are
        # partitioned per bounty, not per day, so the daily policy does not apply to them.
        assets=[*assets, agent_wallets, *ESCROW_ASSETS],
        jobs=[payout_job, wallet_snapshot_job, escrows_job, escrow_release_job],
        schedules=[nightly_payout_schedule, agent_wallets_schedule],
        sensors=[escrow_bounty_sensor, escrow_release_sensor],
        resources=build_resources(active_profile or profile()),
    )


defs = build_definitions()
