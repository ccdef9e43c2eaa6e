"""Bronze: every label that landed for a day, as received."""

import dagster as dg
import pyarrow.compute as pc

from pf_platform.labeling.readers import read_landing_folder
from pf_platform.partitions import daily_partitions
from pf_platform.resources.labeling import LabelingTaskResource
from pf_platform.resources.lake import LakeResource


@dg.asset(
    partitions_def=daily_partitions,
    group_name="labeling",
    kinds={"delta"},
    description="Every label row that landed for the day, as received, with its source file.",
)
def label_submissions(
    context: dg.AssetExecutionContext, lake: LakeResource, labeling_task: LabelingTaskResource
) -> dg.MaterializeResult:
    """Every label row that landed for the day, as received, with its source file."""
    day = context.partition_key
    folder = labeling_task.landing_folder(day)
    rows = read_landing_folder(folder)
    if rows.num_rows == 0:
        context.log.warning("no label files in %s", folder)

    version = lake.overwrite_partition("jobs", "label_submissions", day, rows)

    unreadable = rows.filter(pc.is_valid(rows["read_error"]))
    files = pc.value_counts(rows["source_file"]).to_pylist() if rows.num_rows else []
    for error in unreadable["read_error"].to_pylist()[:20]:
        context.log.warning("unreadable input: %s", error)
    return dg.MaterializeResult(
        metadata={
            "rows": rows.num_rows,
            "unreadable_rows": unreadable.num_rows,
            "files": dg.MetadataValue.md(
                "\n".join(f"- `{item['values']}`: {item['counts']} rows" for item in files)
                or "(none)"
            ),
            "landing_folder": dg.MetadataValue.path(str(folder)),
            "table": lake.uri("jobs", "label_submissions"),
            "delta_version": version,
        }
    )
