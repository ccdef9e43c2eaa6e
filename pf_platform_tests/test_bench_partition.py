"""The partition benchmark lands the day it describes, and its end-to-end run checks the money."""

from __future__ import annotations

import pyarrow.compute as pc
from click.testing import CliRunner

from pf_platform.bench.partition import land_scaled_day, main
from pf_platform.labeling.landing import resolve_dataset
from pf_platform.labeling.readers import read_landing_folder
from pf_platform.resources.labeling import LabelingTaskResource


def test_scaled_day_copies_the_dataset_under_new_ids(tmp_path):
    dataset = resolve_dataset("face-sentiment")
    task = LabelingTaskResource(label_set=list(dataset.label_set))

    day = land_scaled_day(dataset, tmp_path, 6000, 2, task)

    rows = read_landing_folder(tmp_path)
    assert (day.copies, day.rows, day.files, rows.num_rows) == (2, 6000, 2, 6000)
    assert rows["read_error"].null_count == rows.num_rows
    assert len(pc.unique(rows["record_id"])) == 6000
    agents = set(rows["agent_id"].to_pylist())
    assert agents == set(day.agents)
    # The whole first copy's 27 agents, and those of the cut second copy, under their own ids.
    assert sum(agent.endswith("-c0000") for agent in agents) == 27
    assert 0 < sum(agent.endswith("-c0001") for agent in agents) <= 27
    first_items = {item for item in rows["item_id"].to_pylist() if item.startswith("c0000-")}
    assert len(first_items) == 584
    assert 0 < day.expected_transfers < len(agents)


def test_benchmark_pays_a_small_day_and_checks_it():
    result = CliRunner().invoke(main, ["--rows", "6000"])

    assert result.exit_code == 0, result.output
    assert "6,000 rows: 2 copies of face-sentiment" in result.output
    assert "ok: every size paid what agent_payout_summary owes" in result.output
