"""Run the models in dbt_like_sql/models on DuckDB or on Spark SQL.

A model is one ``<name>.sql`` file in the Spark SQL dialect, templated with Jinja:
``{{ ref('model') }}`` names another model, ``{{ source('name') }}`` names an input table the
caller supplies, and ``{{ var('name') }}`` renders a variable as a SQL literal (a list renders as
a comma-separated list of literals, for ``in (...)``). Models run in dependency order.

Both engines run the same rendered text. Spark SQL runs it as written; for DuckDB, sqlglot
transpiles each model just before it runs. Inputs and results cross both engines as Arrow tables
in one canonical form (see ``canonical_table``), so a table written to the lake has the same
schema whichever engine computed it.
"""

from __future__ import annotations

import graphlib
import uuid
from collections.abc import Callable, Mapping
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import jinja2
import pyarrow as pa
import sqlglot
from sqlglot import exp

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

SOURCE_DIALECT = "spark"

# Session settings the model text relies on when it runs as Spark SQL (both are Spark 4 defaults).
REQUIRED_SPARK_SETTINGS = {
    # A cast that fails or overflows is an error, as on DuckDB, never a NULL (money included).
    "spark.sql.ansi.enabled": "true",
    # A backslash in a string literal escapes the next character, as sqlglot reads it for DuckDB,
    # so '\\p{Z}' in a model reaches both regex engines as \p{Z}.
    "spark.sql.parser.escapedStringLiterals": "false",
}


def models_dir() -> Path:
    """The dbt_like_sql/models folder of the checkout (the project installs in editable mode)."""
    return Path(__file__).resolve().parents[2] / "dbt_like_sql" / "models"


def sql_literal(value: object) -> str:
    """Renders a Python value as a SQL literal that reads the same in Spark SQL and DuckDB."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, (str, Decimal)):
        return "'" + str(value).replace("'", "''") + "'"
    if isinstance(value, (list, tuple)):
        if not value:
            raise ValueError("an empty list cannot be rendered for 'in (...)'")
        return ", ".join(sql_literal(item) for item in value)
    raise TypeError(f"no SQL literal for {type(value).__name__}")


def canonical_type(arrow_type: pa.DataType) -> pa.DataType:
    """The one Arrow type a column of this type has on its way into and out of either engine.

    Strings are plain ``string`` (Spark may hand back ``large_string``, Delta ``string_view``),
    binaries plain ``binary``, and timestamps microseconds in UTC: a timestamp without a zone is
    taken to be UTC already, which is what the lake stores.
    """
    if pa.types.is_large_string(arrow_type) or pa.types.is_string_view(arrow_type):
        return pa.string()
    if pa.types.is_large_binary(arrow_type) or pa.types.is_binary_view(arrow_type):
        return pa.binary()
    if pa.types.is_timestamp(arrow_type):
        return pa.timestamp("us", tz="UTC")
    if pa.types.is_dictionary(arrow_type):
        return canonical_type(arrow_type.value_type)
    return arrow_type


def canonical_table(table: pa.Table) -> pa.Table:
    """The table with canonical column types, every column nullable and no schema metadata.

    Spark marks some results non-nullable (a ``count(*)``) where DuckDB does not; a Delta table
    first written from a non-nullable column would then refuse a later write from the other
    engine, so results are always nullable, as DuckDB reports them.
    """
    schema = pa.schema(
        [pa.field(field.name, canonical_type(field.type), nullable=True) for field in table.schema]
    )
    return table if table.schema.equals(schema, check_metadata=True) else table.cast(schema)


def duckdb_sql(spark_sql: str) -> str:
    """One rendered model in DuckDB's dialect.

    sqlglot reads Spark's ``cast`` as the lenient cast of Spark 3 (NULL on failure) and writes it
    as DuckDB's ``try_cast``. Spark 4 casts strictly (ANSI mode: a bad or overflowing cast is an
    error), and a money column must never turn NULL in silence, so a plain ``cast`` stays a
    strict ``cast``; only an explicit ``try_cast`` is lenient on both engines.
    """
    tree = sqlglot.parse_one(spark_sql, read=SOURCE_DIALECT)
    tree = tree.transform(_strict_cast)
    return tree.sql(dialect="duckdb")


def _strict_cast(node: exp.Expression) -> exp.Expression:
    if isinstance(node, exp.TryCast) and not node.args.get("safe"):
        return exp.Cast(this=node.this, to=node.args["to"])
    return node


class ModelProject:
    """The models of one folder, rendered with one set of variables."""

    def __init__(self, variables: Mapping[str, object], folder: Path | None = None):
        self.folder = folder or models_dir()
        self.variables = dict(variables)
        self._env = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False)
        self.sources = {path.stem: path.read_text() for path in sorted(self.folder.glob("*.sql"))}

    def render(self, name: str, relation: Callable[[str], str] = str) -> tuple[str, set[str]]:
        """Returns a model's Spark SQL and the names of the models it refers to.

        Args:
            name: the model.
            relation: maps a model or source name to the table or view name the SQL reads.
        """
        refs: set[str] = set()

        def ref(model: str) -> str:
            if model not in self.sources:
                raise KeyError(f"model {name!r} refers to unknown model {model!r}")
            refs.add(model)
            return relation(model)

        def var(key: str) -> str:
            if key not in self.variables:
                raise KeyError(f"model {name!r} needs variable {key!r}")
            return sql_literal(self.variables[key])

        template = self._env.from_string(self.sources[name])
        sql = template.render(ref=ref, var=var, source=relation)
        return sql, refs

    def order(self, targets: list[str], given: frozenset[str] = frozenset()) -> list[str]:
        """The targets and the models they depend on, dependencies first.

        Models named in ``given`` are supplied by the caller, so they and their own
        dependencies are not run.
        """
        graph: dict[str, set[str]] = {}
        pending = list(targets)
        while pending:
            name = pending.pop()
            if name not in graph:
                graph[name] = set() if name in given else self.render(name)[1]
                pending.extend(graph[name])
        ordered = graphlib.TopologicalSorter(graph).static_order()
        return [name for name in ordered if name not in given]

    def run_duckdb(self, inputs: Mapping[str, pa.Table], targets: list[str]) -> dict[str, pa.Table]:
        """Runs the targets on an in-memory DuckDB over the given input tables.

        Args:
            inputs: tables by name: the sources ``{{ source('name') }}`` refers to, and any
                model whose rows are already known (read from the lake), which is then not run.
            targets: the models to return.

        Returns:
            Each target's rows as an Arrow table in canonical form.
        """
        connection = duckdb.connect()
        try:
            for name, table in inputs.items():
                connection.register(name, canonical_table(table))
            for name in self.order(targets, frozenset(inputs)):
                duck_sql = duckdb_sql(self.render(name)[0])
                connection.execute(f"create or replace temp table {name} as {duck_sql}")
            return {
                name: canonical_table(connection.table(name).to_arrow_table()) for name in targets
            }
        finally:
            connection.close()

    def run_spark(
        self, spark: SparkSession, inputs: Mapping[str, pa.Table], targets: list[str]
    ) -> dict[str, pa.Table]:
        """Runs the targets as Spark SQL in the given session; the contract of ``run_duckdb``.

        Inputs become temporary views and each model a cached temporary view, all named with a
        prefix unique to this call, so calls that share a session (one after another, or at the
        same time from several threads) never read each other's tables. The views and caches are
        dropped before returning.

        Args:
            spark: the session; it must have the ``REQUIRED_SPARK_SETTINGS`` (Spark 4's
                defaults).
            inputs: tables by name, as for ``run_duckdb``.
            targets: the models to return.

        Returns:
            Each target's rows as an Arrow table in canonical form.

        Raises:
            ValueError: the session lacks one of the ``REQUIRED_SPARK_SETTINGS``.
        """
        for key, value in REQUIRED_SPARK_SETTINGS.items():
            if spark.conf.get(key).lower() != value:
                raise ValueError(f"the SQL models need the Spark setting {key}={value}")
        prefix = f"pf_sql_{uuid.uuid4().hex[:12]}_"
        views: list[str] = []
        cached = []
        try:
            for name, table in inputs.items():
                spark.createDataFrame(canonical_table(table)).createTempView(prefix + name)
                views.append(prefix + name)
            for name in self.order(targets, frozenset(inputs)):
                frame = spark.sql(self.render(name, relation=lambda model: prefix + model)[0])
                # A model read by several others (labels_checked) is computed once.
                frame = frame.cache()
                cached.append(frame)
                frame.createTempView(prefix + name)
                views.append(prefix + name)
            return {name: canonical_table(spark.table(prefix + name).toArrow()) for name in targets}
        finally:
            for view in views:
                spark.catalog.dropTempView(view)
            for frame in cached:
                frame.unpersist()
