"""Run the models in dbt_like_sql/models on DuckDB.

A model is one ``<name>.sql`` file in the Spark SQL dialect, templated with Jinja:
``{{ ref('model') }}`` names another model, ``{{ source('name') }}`` names an input table the
caller supplies, and ``{{ var('name') }}`` renders a variable as a SQL literal (a list renders as
a comma-separated list of literals, for ``in (...)``). Models run in dependency order; sqlglot
transpiles each one to DuckDB's dialect just before it runs.
"""

from __future__ import annotations

import graphlib
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path

import duckdb
import jinja2
import pyarrow as pa
import sqlglot

SOURCE_DIALECT = "spark"


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


class ModelProject:
    """The models of one folder, rendered with one set of variables."""

    def __init__(self, variables: Mapping[str, object], folder: Path | None = None):
        self.folder = folder or models_dir()
        self.variables = dict(variables)
        self._env = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False)
        self.sources = {path.stem: path.read_text() for path in sorted(self.folder.glob("*.sql"))}

    def render(self, name: str) -> tuple[str, set[str]]:
        """Returns a model's Spark SQL and the names of the models it refers to."""
        refs: set[str] = set()

        def ref(model: str) -> str:
            if model not in self.sources:
                raise KeyError(f"model {name!r} refers to unknown model {model!r}")
            refs.add(model)
            return model

        def var(key: str) -> str:
            if key not in self.variables:
                raise KeyError(f"model {name!r} needs variable {key!r}")
            return sql_literal(self.variables[key])

        template = self._env.from_string(self.sources[name])
        sql = template.render(ref=ref, var=var, source=lambda table: table)
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
            Each target's rows as an Arrow table.
        """
        connection = duckdb.connect()
        try:
            for name, table in inputs.items():
                connection.register(name, table)
            for name in self.order(targets, frozenset(inputs)):
                duck_sql = sqlglot.transpile(
                    self.render(name)[0], read=SOURCE_DIALECT, write="duckdb"
                )[0]
                connection.execute(f"create or replace temp table {name} as {duck_sql}")
            return {name: connection.table(name).to_arrow_table() for name in targets}
        finally:
            connection.close()
