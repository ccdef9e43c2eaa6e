"""Bad input is quarantined with a reason while the rest of the day is still paid.

A day is paid from a clean file first. Then every kind of bad input lands beside it and the day is
run again: each bad row must end in quarantine naming the expectation it failed, the good rows
stay validated, the run succeeds, nothing already recorded is lost and nothing is paid twice.
"""

from __future__ import annotations

import json
from decimal import Decimal

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq

from pf_platform import settings
from pf_platform.resources.lake import LakeResource
from pf_platform_tests.helpers import ledger_paid_by_agent, materialization, run_day

DAY = "2026-11-03"
LABELS = ["happy", "sad"]
HEADER = "record_id,item_id,agent_id,label,confidence\n"


def _good_rows() -> str:
    # Three agents label four items; agent_c disagrees once (3 of 4 = 0.75 >= 0.7).
    rows = []
    for item in range(4):
        for agent in ("agent_a", "agent_b", "agent_c"):
            label = "sad" if agent == "agent_c" and item == 0 else "happy"
            rows.append(f"{agent}-{item},item_{item},{agent},{label},0.9\n")
    return HEADER + "".join(rows)


def _land_bad_files(folder) -> dict[str, str]:
    """Writes one file per defect; returns {record_id or file: expectation it must fail}."""
    (folder / "b_missing_label_column.csv").write_text(
        "record_id,item_id,agent_id\nmissing-col,item_0,agent_a\n"
    )
    (folder / "c_empty.csv").write_bytes(b"")
    (folder / "d_not_utf8.csv").write_bytes(
        HEADER.encode() + b"bad-bytes,item_0,agent_\xc3\x28,happy,0.5\n"
    )
    lines = [
        {"record_id": "outside-set", "item_id": "item_1", "agent_id": "agent_a", "label": "angry"},
        {
            "record_id": "conf-1.7",
            "item_id": "item_1",
            "agent_id": "agent_a",
            "label": "happy",
            "confidence": 1.7,
        },
        {
            "record_id": "conf-text",
            "item_id": "item_1",
            "agent_id": "agent_a",
            "label": "happy",
            "confidence": "high",
        },
        {"record_id": "agent_a-0", "item_id": "item_0", "agent_id": "agent_a", "label": "sad"},
        {"record_id": "blank-agent", "item_id": "item_1", "agent_id": "   ", "label": "happy"},
    ]
    text = "\n".join(json.dumps(line) for line in lines)
    text += '\n{"record_id": "conf-nan", "item_id": "item_1", "agent_id": "agent_b", '
    text += '"label": "happy", "confidence": NaN}\n'
    (folder / "e_values.jsonl").write_text(text)
    huge = json.dumps({"record_id": "huge", "agent_id": "agent_a", "label": "x" * 10_000_000})
    (folder / "f_huge_line.jsonl").write_text(huge + "\n")
    pq.write_table(
        pa.table(
            {"record_id": ["pq-bad"], "item_id": ["item_2"], "agent_id": [None], "label": ["happy"]}
        ),
        folder / "g_null_agent.parquet",
    )
    return {
        "missing-col": "label_in_set",
        "c_empty.csv": "row_readable",
        "d_not_utf8.csv": "row_readable",
        "outside-set": "label_in_set",
        "conf-1.7": "confidence_in_range",
        "conf-text": "confidence_in_range",
        "conf-nan": "confidence_in_range",
        "agent_a-0": "record_id_unique",
        "blank-agent": "agent_id_present",
        "f_huge_line.jsonl": "row_readable",
        "pq-bad": "agent_id_present",
    }


def test_bad_input_is_quarantined_and_the_day_still_paid(project_home, sandbox):
    folder = settings.landing_root() / DAY
    folder.mkdir(parents=True)
    (folder / "a_good.csv").write_text(_good_rows())
    sandbox.register(["agent_a", "agent_b", "agent_c"])
    instance = dg.DagsterInstance.ephemeral()

    clean = run_day(DAY, LABELS, instance)
    assert clean.success
    paid_clean = ledger_paid_by_agent([DAY])
    assert paid_clean == {
        "agent_a": Decimal("0.008"),
        "agent_b": Decimal("0.008"),
        "agent_c": Decimal("0.006"),
    }
    transfers_after_clean = sandbox.stats()["transfers_committed"]

    expected = _land_bad_files(folder)
    dirty = run_day(DAY, LABELS, instance)

    assert dirty.success
    assert materialization(dirty, "validate_labels", "validated_labels")["rows"] == 12
    quarantined = LakeResource().read_partition("jobs", "quarantined_labels", DAY).to_pylist()
    found = {}
    for row in quarantined:
        name = row["record_id"] if row["record_id"] else row["source_file"]
        found[name] = row["failed_expectations"]
    assert found == expected
    reasons = {row["source_file"]: row["read_error"] for row in quarantined if row["read_error"]}
    assert reasons["c_empty.csv"] == "c_empty.csv: empty file"
    assert reasons["d_not_utf8.csv"] == "d_not_utf8.csv:2: not valid UTF-8 at byte 23"
    assert reasons["f_huge_line.jsonl"].startswith("f_huge_line.jsonl:1: line is 10,000,")
    # The failing expectation checks say how many rows each rule caught.
    checks = {e.check_name: e for e in dirty.get_asset_check_evaluations()}
    assert checks["check_confidence_in_range"].passed is False
    assert checks["check_confidence_in_range"].metadata["failed_rows"].value == 3
    assert checks["check_row_readable"].metadata["failed_rows"].value == 3
    assert checks["check_item_id_present"].passed is True
    # Nothing recorded earlier is lost, nothing is paid twice, nothing bad is paid.
    assert ledger_paid_by_agent([DAY]) == paid_clean
    assert sandbox.stats()["transfers_committed"] == transfers_after_clean
    assert materialization(dirty, "transfer_results", "transfer_results")["transfers_sent"] == 0
