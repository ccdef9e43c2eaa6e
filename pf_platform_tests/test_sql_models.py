"""The dbt_like_sql models: each expectation, consensus and exact payout amounts."""

from __future__ import annotations

from decimal import Decimal

import pyarrow as pa
import pytest
from dagster_pyspark import LazyPySparkResource

from pf_platform.labeling.readers import BRONZE_SCHEMA
from pf_platform.resources.sql import SqlEngineResource
from pf_platform.sql.runner import ModelProject, sql_literal

VARIABLES = {
    "label_set": ["happy", "sad"],
    "agreement_threshold": Decimal("0.75"),
    "rate_usdc": Decimal("0.002"),
    "min_votes": 2,
}


def _bronze(*rows: dict) -> pa.Table:
    full = []
    for line, row in enumerate(rows, start=1):
        base = {name: None for name in BRONZE_SCHEMA.names}
        base.update(source_file="f.csv", source_line=line)
        base.update(row)
        full.append(base)
    return pa.Table.from_pylist(full, schema=BRONZE_SCHEMA)


def _label(record_id, agent, item, label, **extra):
    return dict(record_id=record_id, agent_id=agent, item_id=item, label=label, **extra)


OWNERS = pa.schema(
    [("record_id", pa.string()), ("source_file", pa.string()), ("source_line", pa.int64())]
)


def _known(owners=(), other_days=()) -> dict[str, pa.Table]:
    return {
        "same_day_owners": pa.Table.from_pylist(list(owners), schema=OWNERS),
        "other_day_records": pa.table({"record_id": pa.array(list(other_days), pa.string())}),
    }


def _run(bronze: pa.Table, variables=VARIABLES, owners=(), other_days=()):
    return ModelProject(variables).run_duckdb(
        {"label_submissions": bronze, **_known(owners, other_days)},
        ["validated_labels", "quarantined_labels", "agent_payout_summary"],
    )


def test_each_bad_row_names_its_expectation():
    bronze = _bronze(
        _label("ok", "a1", "i1", "happy", confidence="0.9"),
        _label("r-label", "a1", "i1", "angry"),
        _label("r-conf-high", "a1", "i1", "happy", confidence="1.7"),
        _label("r-conf-nan", "a1", "i1", "happy", confidence="NaN"),
        _label("r-conf-text", "a1", "i1", "happy", confidence="high"),
        _label("r-conf-inf", "a1", "i1", "happy", confidence="Infinity"),
        _label("ok", "a2", "i1", "happy"),
        _label("r-blank-agent", "  ", "i1", "happy"),
        _label(None, "a1", "i1", "happy"),
        _label("r-no-item", "a1", "", "happy"),
        {"read_error": "f.csv:12: not valid UTF-8 at byte 3", "raw": "x"},
        _label("r-edge", "a3", "i1", "sad", confidence=" 1 "),
        _label("r-empty-conf", "a3", "i2", "sad", confidence=""),
    )
    out = _run(bronze)

    failed = {
        (row["record_id"], row["source_line"]): row["failed_expectations"]
        for row in out["quarantined_labels"].to_pylist()
    }
    assert failed == {
        ("r-label", 2): "label_in_set",
        ("r-conf-high", 3): "confidence_in_range",
        ("r-conf-nan", 4): "confidence_in_range",
        ("r-conf-text", 5): "confidence_in_range",
        ("r-conf-inf", 6): "confidence_in_range",
        ("ok", 7): "record_id_unique",
        ("r-blank-agent", 8): "agent_id_present",
        (None, 9): "record_id_present",
        ("r-no-item", 10): "item_id_present",
        (None, 11): "row_readable",
    }
    validated = sorted(row["record_id"] for row in out["validated_labels"].to_pylist())
    assert validated == ["ok", "r-edge", "r-empty-conf"]


def test_consensus_agreement_and_exact_amounts():
    labels = []
    # Item i1: three happy, one sad -> consensus happy. Item i2: one vote -> no consensus.
    # Item i3: tie -> no consensus. Items i4..i6: a1 and a2 agree on happy.
    for n, (agent, item, label) in enumerate(
        [
            ("a1", "i1", "happy"),
            ("a2", "i1", "happy"),
            ("a3", "i1", "happy"),
            ("a4", "i1", "sad"),
            ("a1", "i2", "sad"),
            ("a1", "i3", "happy"),
            ("a2", "i3", "sad"),
            ("a1", "i4", "happy"),
            ("a2", "i4", "happy"),
            ("a1", "i5", "happy"),
            ("a2", "i5", "happy"),
            ("a4", "i5", "sad"),
        ]
    ):
        labels.append(_label(f"r{n}", agent, item, label))
    out = _run(_bronze(*labels))

    consensus = {
        row["item_id"]: row["consensus_label"] for row in out["validated_labels"].to_pylist()
    }
    assert consensus == {"i1": "happy", "i2": None, "i3": None, "i4": "happy", "i5": "happy"}
    summary = {row["agent_id"]: row for row in out["agent_payout_summary"].to_pylist()}
    assert summary["a1"]["verified_labels"] == 3 and summary["a1"]["labels_with_consensus"] == 3
    assert summary["a1"]["amount_owed_usdc"] == Decimal("0.006000")
    assert summary["a2"]["amount_owed_usdc"] == Decimal("0.006000")
    assert summary["a3"]["amount_owed_usdc"] == Decimal("0.002000")
    # a4 disagreed on both its consensus items: not eligible, owed nothing.
    assert summary["a4"]["eligible"] is False
    assert summary["a4"]["amount_owed_usdc"] == Decimal(0)
    assert out["agent_payout_summary"].schema.field("amount_owed_usdc").type == pa.decimal128(38, 6)


def test_threshold_is_compared_exactly():
    # 3 of 4 agree: a rate of exactly 0.75 meets a 0.75 threshold and misses 0.750001.
    labels = [
        _label("a", "x", "i1", "happy"),
        _label("b", "y", "i1", "happy"),
        _label("c", "x", "i2", "happy"),
        _label("d", "y", "i2", "happy"),
        _label("e", "x", "i3", "happy"),
        _label("f", "y", "i3", "happy"),
        _label("g", "z", "i3", "happy"),
        _label("h", "x", "i4", "sad"),
        _label("i", "y", "i4", "happy"),
        _label("j", "z", "i4", "happy"),
    ]
    at = {r["agent_id"]: r for r in _run(_bronze(*labels))["agent_payout_summary"].to_pylist()}
    assert at["x"]["eligible"] is True and at["x"]["amount_owed_usdc"] == Decimal("0.006")
    stricter = dict(VARIABLES, agreement_threshold=Decimal("0.750001"))
    above = {
        r["agent_id"]: r
        for r in _run(_bronze(*labels), stricter)["agent_payout_summary"].to_pylist()
    }
    assert above["x"]["eligible"] is False and above["x"]["amount_owed_usdc"] == 0


def test_sql_literals_escape_and_refuse_unknown_types():
    assert sql_literal(["it's", "b"]) == "'it''s', 'b'"
    assert sql_literal(Decimal("0.002")) == "'0.002'"
    with pytest.raises(TypeError):
        sql_literal(0.002)


def test_an_agent_counts_once_per_item_and_cannot_make_consensus_alone():
    labels = [
        _label("m1", "mallory", "i4", "happy"),
        _label("m2", "mallory", "i4", "happy"),
        _label("m3", "mallory", "i4", "happy"),
        _label("a1", "alice", "i5", "angry"),  # invalid label: alice's next label of i5 counts
        _label("a2", "alice", "i5", "sad"),
        _label("b1", "bob", "i5", "sad"),
    ]
    out = _run(_bronze(*labels))

    failed = {
        r["record_id"]: r["failed_expectations"] for r in out["quarantined_labels"].to_pylist()
    }
    assert failed == {"m2": "agent_item_unique", "m3": "agent_item_unique", "a1": "label_in_set"}
    summary = {r["agent_id"]: r for r in out["agent_payout_summary"].to_pylist()}
    # mallory's three labels are one vote: below min_votes, so no consensus and no pay.
    assert summary["mallory"]["labels_with_consensus"] == 0
    assert summary["mallory"]["amount_owed_usdc"] == 0
    assert summary["alice"]["amount_owed_usdc"] == Decimal("0.002")


def test_a_record_validated_before_keeps_its_row():
    # r1 was validated on another day; r2 was validated today from b.csv line 2, and now a file
    # that sorts earlier repeats r2 for another agent.
    bronze = _bronze(
        _label("r1", "a1", "i1", "happy"),
        _label("r2", "a1", "i2", "happy", source_file="b.csv", source_line=2),
        _label("r2", "a9", "i2", "happy", source_file="a.csv", source_line=7),
    )
    out = _run(
        bronze,
        owners=[{"record_id": "r2", "source_file": "b.csv", "source_line": 2}],
        other_days=["r1"],
    )

    failed = {
        (r["record_id"], r["agent_id"]): r["failed_expectations"]
        for r in out["quarantined_labels"].to_pylist()
    }
    assert failed == {("r1", "a1"): "record_id_unique", ("r2", "a9"): "record_id_unique"}
    assert [(r["record_id"], r["agent_id"]) for r in out["validated_labels"].to_pylist()] == [
        ("r2", "a1")
    ]


def test_the_duckdb_engine_never_starts_spark():
    pyspark = LazyPySparkResource(spark_config={"spark.master": "local[1]"})
    engine = SqlEngineResource(engine="duckdb", pyspark=pyspark)
    bronze = _bronze(_label("r1", "a1", "i1", "happy"), _label("r2", "a2", "i1", "happy"))

    out = engine.run(VARIABLES, {"label_submissions": bronze, **_known()}, ["validated_labels"])

    assert out["validated_labels"].num_rows == 2
    assert pyspark._spark_session is None  # the lazy resource's session, never asked for


def test_invisible_ids_are_missing_and_confidence_is_a_plain_number():
    bronze = _bronze(
        _label("r-tab", "\t", "i1", "happy"),
        _label("r-nbsp", "a1", "\u00a0", "happy"),
        _label("\u200b", "a1", "i1", "happy"),
        _label("r-1d", "a1", "i2", "happy", confidence="1d"),
        _label("r-hex", "a1", "i3", "happy", confidence="0x1p-2"),
        _label("r-underscore", "a1", "i4", "happy", confidence="0_0"),
        _label("r-exp", "a1", "i5", "happy", confidence=" 1E-1 "),
        _label("r-invisible", "a2", "i5", "happy", confidence="\u3000"),
    )
    out = _run(bronze)

    failed = {
        r["record_id"]: r["failed_expectations"] for r in out["quarantined_labels"].to_pylist()
    }
    assert failed == {
        "r-tab": "agent_id_present",
        "r-nbsp": "item_id_present",
        "\u200b": "record_id_present",
        "r-1d": "confidence_in_range",
        "r-hex": "confidence_in_range",
        "r-underscore": "confidence_in_range",
    }
    confidence = {r["record_id"]: r["confidence"] for r in out["validated_labels"].to_pylist()}
    assert confidence == {"r-exp": 0.1, "r-invisible": None}
