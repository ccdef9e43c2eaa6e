"""Gold: verified labels and the amount owed per agent and day."""

import dagster as dg
import pyarrow.compute as pc

from pf_platform.partitions import daily_partitions
from pf_platform.resources.labeling import LabelingTaskResource
from pf_platform.resources.lake import PARTITION_COLUMN, LakeResource
from pf_platform.resources.sql import SqlEngineResource


@dg.asset(
    partitions_def=daily_partitions,
    group_name="payouts",
    deps=["validated_labels"],
    kinds={"delta", "sql"},
)
def agent_payout_summary(
    context: dg.AssetExecutionContext,
    # The Spark SQL engine runs where the step runs: on the cluster in the databricks profile.
    step_launcher: dg.ResourceParam[dg.StepLauncher | None],
    lake: LakeResource,
    labeling_task: LabelingTaskResource,
    sql_engine: SqlEngineResource,
) -> dg.MaterializeResult:
    """Verified labels, agreement rate and amount owed per agent for the day."""
    day = context.partition_key
    validated = lake.read_partition("jobs", "validated_labels", day)
    if validated is None:
        raise dg.Failure(f"jobs.validated_labels has no rows for {day}: materialize it first")

    summary = sql_engine.run(
        labeling_task.sql_variables(),
        {"validated_labels": validated.drop_columns([PARTITION_COLUMN])},
        ["agent_payout_summary"],
    )["agent_payout_summary"]
    version = lake.overwrite_partition("agents", "payout_summary", day, summary)

    eligible = summary.filter(summary["eligible"])
    owed = pc.sum(summary["amount_owed_usdc"]).as_py() if summary.num_rows else None
    return dg.MaterializeResult(
        metadata={
            "agents": summary.num_rows,
            "agents_eligible": eligible.num_rows,
            "verified_labels": pc.sum(summary["verified_labels"]).as_py() or 0,
            "usdc_owed": str(owed or 0),
            "agreement_threshold": labeling_task.agreement_threshold,
            "rate_usdc": labeling_task.rate_usdc,
            "sql_engine": sql_engine.engine,
            "table": lake.uri("agents", "payout_summary"),
            "delta_version": version,
        }
    )
