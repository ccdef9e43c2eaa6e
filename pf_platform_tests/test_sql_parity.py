"""One SQL source, two engines: DuckDB and Spark SQL return identical tables.

The contract: the dbt_like_sql models (Spark SQL dialect) run unchanged on both engines, and for
the same inputs validated_labels, quarantined_labels and agent_payout_summary come back with the
same column names and Arrow types (money DECIMAL(38,6), counts int64, every column nullable) and
the same rows once both are sorted on every column. Where the engines differ (trim, lenient
casts, nullability), the SQL source or the runner's canonical schema makes them agree; this
comparison does not forgive anything.

The inputs are real: the bundled face-sentiment and product-matching datasets, landed over days
the way the demo lands them (CSV, JSON lines and Parquet), with bad files added to some days:
unreadable lines, blank and invisible ids, numbers only one engine would parse, labels outside
the set, repeated record ids and labels, and record ids validated on another day. Through
Dagster, days materialized with the spark engine write the same Delta rows as with duckdb.

One local Spark session (``local[2]``) serves the whole module and is stopped at its end.
"""

from __future__ import annotations

import json
import shutil
import threading
from datetime import date
from decimal import Decimal
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from dagster_pyspark import LazyPySparkResource
from pyspark.sql import SparkSession

from pf_platform.assets.labeling.submissions import label_submissions
from pf_platform.assets.labeling.validation import EXPECTATIONS, validate_labels
from pf_platform.assets.payouts.summary import agent_payout_summary
from pf_platform.labeling.landing import resolve_dataset, spread_over_days
from pf_platform.labeling.readers import read_landing_folder
from pf_platform.resources.labeling import LabelingTaskResource
from pf_platform.resources.lake import PARTITION_COLUMN, LakeResource
from pf_platform.resources.spark import local_spark_config
from pf_platform.resources.sql import SqlEngineResource
from pf_platform.sql.runner import ModelProject

START = date(2026, 11, 1)
TARGETS = ["validated_labels", "quarantined_labels", "agent_payout_summary"]
OWNERS = pa.schema(
    [("record_id", pa.string()), ("source_file", pa.string()), ("source_line", pa.int64())]
)
RECORDS = pa.schema([("record_id", pa.string())])

# The schema each model promises, on either engine.
EXPECTED_SCHEMAS = {
    "validated_labels": pa.schema(
        [
            ("record_id", pa.string()),
            ("item_id", pa.string()),
            ("agent_id", pa.string()),
            ("label", pa.string()),
            ("confidence", pa.float64()),
            ("submitted_at", pa.string()),
            ("source_file", pa.string()),
            ("source_line", pa.int64()),
            ("consensus_label", pa.string()),
            ("agrees_with_consensus", pa.bool_()),
        ]
    ),
    "quarantined_labels": pa.schema(
        [
            ("record_id", pa.string()),
            ("item_id", pa.string()),
            ("agent_id", pa.string()),
            ("label", pa.string()),
            ("confidence", pa.string()),
            ("submitted_at", pa.string()),
            ("source_file", pa.string()),
            ("source_line", pa.int64()),
            ("read_error", pa.string()),
            ("raw", pa.string()),
            ("failed_expectations", pa.string()),
        ]
    ),
    "agent_payout_summary": pa.schema(
        [
            ("agent_id", pa.string()),
            ("validated_labels", pa.int64()),
            ("labels_with_consensus", pa.int64()),
            ("verified_labels", pa.int64()),
            ("agreement_rate", pa.float64()),
            ("eligible", pa.bool_()),
            ("amount_owed_usdc", pa.decimal128(38, 6)),
        ]
    ),
}

# Characters that make an id look blank, or not, depending on whose trim() judges it.
INVISIBLE = ["", " ", "\t", "\u00a0", "\u3000", "\u200b", "\ufeff", " \r "]
# Confidence texts the engines' lenient casts read differently, and plain ones both read alike.
CONFIDENCES = [
    "1d", "0.5f", "0x1p-2", "0_0", "1_000", "\t0.5", "\u00a00.5", "0.5\u00a0", "NaN", "-Infinity",
    "1e400", "1e-400", " 1 ", ".5", "5.", "+0.5", "-0", "1E-1", "0.30000000000000004", "1,5",
    "", "  ", "\u200b", "high",
]  # fmt: skip


def _bad_csv(day: str, repeated: list[str]) -> str:
    """A CSV of bad and borderline rows; ``repeated`` are record ids validated before."""
    lines = ["record_id,item_id,agent_id,label,confidence"]
    for n, text in enumerate(INVISIBLE):
        lines.append(f'"{text}",bad-{day}-r{n},agent_0001,happy,')
        lines.append(f'bad-{day}-a{n},bad-{day}-a{n},"{text}",happy,')
        lines.append(f'bad-{day}-i{n},"{text}",agent_0002,happy,')
    for n, text in enumerate(CONFIDENCES):
        lines.append(f'bad-{day}-c{n},bad-{day}-c{n},agent_0003,sad,"{text}"')
    for n, label in enumerate(["Happy", "happy ", "joy", ""]):
        lines.append(f"bad-{day}-l{n},bad-{day}-l,agent_0004,{label},")
    # One agent labels one item three times: the first valid label counts, once.
    for n, label in enumerate(["angry", "sad", "sad"]):
        lines.append(f"bad-{day}-dup{n},bad-{day}-dup,agent_0005,{label},0.9")
    # Unicode ids sort and compare byte-wise on both engines.
    for n, agent in enumerate(["agent_é", "agent_e", "agent_ß", "agent_😀"]):
        lines.append(f"bad-{day}-u{n},bad-{day}-u,{agent},neutral,")
    lines.append(f"bad-{day}-u9,bad-{day}-u,agent_0006,angry,")
    for record_id in repeated:
        lines.append(f"{record_id},bad-{day}-rep,agent_0007,happy,")
    lines.append(f"bad-{day}-short,only two")
    return "\n".join(lines) + "\n"


def _bad_jsonl(day: str) -> bytes:
    rows = [
        {"record_id": f"bad-{day}-j0", "item_id": f"bad-{day}-j", "agent_id": "agent_0008",
         "label": "happy", "confidence": 0.25},
        {"record_id": f"bad-{day}-j1", "item_id": f"bad-{day}-j", "agent_id": "agent_0009",
         "label": "happy", "confidence": 1e-05},
        {"record_id": f"bad-{day}-j2", "item_id": f"bad-{day}-j", "agent_id": ["not", "text"],
         "label": "happy"},
        {"record_id": f"bad-{day}-j3", "item_id": f"bad-{day}-j", "agent_id": "agent_0010",
         "label": {"nested": True}, "confidence": True},
    ]  # fmt: skip
    text = "".join(json.dumps(row) + "\n" for row in rows).encode()
    return text + b'["an", "array"]\n{"record_id": "bad-\xff"}\n{not json\n'


@pytest.fixture(scope="module")
def spark():
    builder = SparkSession.builder
    for key, value in local_spark_config(master="local[2]").items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture(scope="module")
def landing(tmp_path_factory) -> Path:
    """The first three of seven face-sentiment days (CSV, JSON lines, Parquet), with bad files
    on the second and third."""
    root = tmp_path_factory.mktemp("landing")
    dataset = resolve_dataset("face-sentiment")
    days = [d.isoformat() for d in spread_over_days(dataset, root, START, days=7)]
    for day in days[3:]:
        shutil.rmtree(root / day)
    first_ids = read_landing_folder(root / days[0])["record_id"].to_pylist()
    second_ids = read_landing_folder(root / days[1])["record_id"].to_pylist()
    (root / days[1] / "zz_bad.csv").write_text(_bad_csv(days[1], first_ids[:3]))
    (root / days[1] / "zz_bad.jsonl").write_bytes(_bad_jsonl(days[1]))
    (root / days[2] / "zz_bad.csv").write_text(_bad_csv(days[2], second_ids[:5]))
    (root / days[2] / "zz_bad.csv.bak").write_text("not a landing format\n")
    return root


def _inputs(bronze: pa.Table, owners: pa.Table | None = None, others=()) -> dict[str, pa.Table]:
    return {
        "label_submissions": bronze,
        "same_day_owners": owners if owners is not None else OWNERS.empty_table(),
        "other_day_records": pa.table({"record_id": pa.array(sorted(others), pa.string())}),
    }


def _face_cases(landing: Path) -> dict[str, tuple[list[str], dict[str, pa.Table]]]:
    """Each case: the task's label set and the models' inputs, as validate_labels builds them."""
    labels = list(resolve_dataset("face-sentiment").label_set)
    days = sorted(path.name for path in landing.iterdir())
    bronze = {day: read_landing_folder(landing / day) for day in days}
    earlier: set[str] = set()
    cases = {}
    for day in days:
        cases[day] = (labels, _inputs(bronze[day], others=earlier))
        earlier |= {r for r in bronze[day]["record_id"].to_pylist() if r}
    # A re-run of the second day: its dataset file was validated first, and a late file that
    # sorts before it repeats those record ids for other agents.
    day = days[1]
    original = bronze[day].filter(pc.equal(bronze[day]["source_file"], "face-sentiment.jsonl"))
    late = original.slice(0, 40)
    for column, value in (("agent_id", "agent_late"), ("source_file", "a.csv")):
        index = late.schema.get_field_index(column)
        late = late.set_column(index, column, pa.array([value] * late.num_rows, pa.string()))
    owners = original.select(OWNERS.names)
    cases[f"{day}-rerun"] = (
        labels,
        _inputs(pa.concat_tables([late, bronze[day]]), owners, others=set()),
    )
    return cases


def _sorted_rows(table: pa.Table) -> list[dict]:
    return table.sort_by([(name, "ascending") for name in table.column_names]).to_pylist()


def _assert_same_rows(name: str, duck: pa.Table, spark: pa.Table) -> None:
    duck_rows, spark_rows = _sorted_rows(duck), _sorted_rows(spark)
    if duck_rows != spark_rows:
        only_duck = [row for row in duck_rows if row not in spark_rows]
        only_spark = [row for row in spark_rows if row not in duck_rows]
        pytest.fail(
            f"{name}: {len(duck_rows)} rows on duckdb, {len(spark_rows)} on spark; "
            f"only on duckdb: {only_duck[:5]}; only on spark: {only_spark[:5]}"
        )


def _assert_identical(duck: dict[str, pa.Table], spark: dict[str, pa.Table]) -> None:
    for name in TARGETS:
        assert duck[name].schema.equals(EXPECTED_SCHEMAS[name], check_metadata=True), name
        assert spark[name].schema.equals(EXPECTED_SCHEMAS[name], check_metadata=True), name
        _assert_same_rows(name, duck[name], spark[name])


def _variables(labels: list[str]) -> dict[str, object]:
    return LabelingTaskResource(landing_root="unused", label_set=labels).sql_variables()


def test_face_sentiment_days_are_identical_on_both_engines(spark, landing):
    failed: set[str] = set()
    for case, (labels, inputs) in _face_cases(landing).items():
        project = ModelProject(_variables(labels))
        duck = project.run_duckdb(inputs, TARGETS)
        on_spark = project.run_spark(spark, inputs, TARGETS)

        _assert_identical(duck, on_spark)
        assert duck["validated_labels"].num_rows > 500, case
        for names in duck["quarantined_labels"]["failed_expectations"].to_pylist():
            failed.update(names.split(","))
    # The bad files reach every expectation, so each rule was compared on both engines.
    assert failed == set(EXPECTATIONS)


def test_a_larger_real_day_is_identical_on_both_engines(spark, tmp_path):
    # product-matching: 24,945 labels over 7 days, about 3,600 a day, two labels.
    dataset = resolve_dataset("product-matching")
    day = spread_over_days(dataset, tmp_path, START, days=7)[3].isoformat()
    bronze = read_landing_folder(tmp_path / day)
    project = ModelProject(_variables(list(dataset.label_set)))

    duck = project.run_duckdb(_inputs(bronze), TARGETS)
    on_spark = project.run_spark(spark, _inputs(bronze), TARGETS)

    _assert_identical(duck, on_spark)
    assert duck["validated_labels"].num_rows == bronze.num_rows > 3000
    assert sum(duck["agent_payout_summary"]["amount_owed_usdc"].to_pylist()) > 0


def test_calls_sharing_a_session_neither_collide_nor_leave_views(spark):
    bronze = {
        name: pa.table(
            {
                **{c: pa.array([None] * 2, pa.string()) for c in ("confidence", "submitted_at")},
                "record_id": [f"{name}-1", f"{name}-2"],
                "item_id": ["i1", "i1"],
                "agent_id": [f"{name}-a", f"{name}-b"],
                "label": ["happy", "happy"],
                "source_file": ["f.csv", "f.csv"],
                "source_line": pa.array([1, 2], pa.int64()),
                "read_error": pa.array([None] * 2, pa.string()),
                "raw": pa.array([None] * 2, pa.string()),
            }
        )
        for name in ("left", "right")
    }
    project = ModelProject(_variables(["happy"]))
    results: dict[str, dict[str, pa.Table]] = {}

    def run(name: str) -> None:
        results[name] = project.run_spark(spark, _inputs(bronze[name]), ["agent_payout_summary"])

    threads = [threading.Thread(target=run, args=(name,)) for name in bronze]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    for name in bronze:
        rows = results[name]["agent_payout_summary"].to_pylist()
        assert {row["agent_id"] for row in rows} == {f"{name}-a", f"{name}-b"}
        assert all(row["amount_owed_usdc"] == Decimal("0.002000") for row in rows)
    assert [t.name for t in spark.catalog.listTables() if t.name.startswith("pf_sql_")] == []


def test_a_failing_cast_fails_on_both_engines_and_try_cast_does_not(spark, tmp_path):
    (tmp_path / "strict.sql").write_text("select cast(n as bigint) as n from {{ source('t') }}")
    (tmp_path / "lenient.sql").write_text(
        "select try_cast(n as bigint) as n from {{ source('t') }}"
    )
    project = ModelProject({}, folder=tmp_path)
    inputs = {"t": pa.table({"n": ["12", "12x"]})}

    with pytest.raises(Exception, match="12x"):
        project.run_duckdb(inputs, ["strict"])
    with pytest.raises(Exception, match="12x"):
        project.run_spark(spark, inputs, ["strict"])
    for result in (
        project.run_duckdb(inputs, ["lenient"]),
        project.run_spark(spark, inputs, ["lenient"]),
    ):
        assert sorted(result["lenient"]["n"].to_pylist(), key=str) == [12, None]


def _materialize_days(engine: str, landing: Path, lake_root: Path, days: list[str]) -> None:
    pyspark = LazyPySparkResource(spark_config=local_spark_config(master="local[2]"))
    resources = {
        "lake": LakeResource(root=str(lake_root)),
        "labeling_task": LabelingTaskResource(
            landing_root=str(landing),
            label_set=list(resolve_dataset("face-sentiment").label_set),
        ),
        "pyspark": pyspark,
        "sql_engine": SqlEngineResource(engine=engine, pyspark=pyspark),
        "step_launcher": dg.ResourceDefinition.none_resource(),
    }
    for day in days:
        result = dg.materialize(
            [label_submissions, validate_labels, agent_payout_summary],
            partition_key=day,
            resources=resources,
            instance=dg.DagsterInstance.ephemeral(),
        )
        assert result.success
        for event in result.get_asset_materialization_events():
            metadata = event.materialization.metadata
            if "sql_engine" in metadata:
                assert metadata["sql_engine"].value == engine


def test_the_asset_graph_writes_the_same_delta_rows_with_either_engine(spark, landing, tmp_path):
    # The second and third days: bad rows on both, and the third repeats record ids of the
    # second, which only the lake (validated_labels of another day) can tell.
    days = sorted(path.name for path in landing.iterdir())[1:]
    _materialize_days("duckdb", landing, tmp_path / "duck", days)
    _materialize_days("spark", landing, tmp_path / "spark", days)

    duck = LakeResource(root=str(tmp_path / "duck"))
    on_spark = LakeResource(root=str(tmp_path / "spark"))
    tables = [
        ("jobs", "validated_labels"),
        ("jobs", "quarantined_labels"),
        ("agents", "payout_summary"),
    ]
    for day in days:
        for schema, table in tables:
            expected = duck.read_partition(schema, table, day).drop_columns([PARTITION_COLUMN])
            written = on_spark.read_partition(schema, table, day).drop_columns([PARTITION_COLUMN])
            assert written.schema.equals(expected.schema), table
            _assert_same_rows(f"{schema}.{table} {day}", expected, written)
            assert expected.num_rows > 0, table
    repeated = duck.read_partition("jobs", "quarantined_labels", days[1])
    assert "record_id_unique" in repeated["failed_expectations"].to_pylist()
