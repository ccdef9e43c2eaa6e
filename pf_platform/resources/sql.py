"""The engine the dbt_like_sql models run on, so that asset code never asks which one it is."""

# No "from __future__ import annotations": Dagster reads the pyspark annotation at class creation
# to see that it is a resource dependency, and a string annotation hides that.

from collections.abc import Mapping
from typing import Literal

import dagster as dg
import pyarrow as pa
from dagster_pyspark import LazyPySparkResource, PySparkResource

from pf_platform.sql.runner import ModelProject


class SqlEngineResource(dg.ConfigurableResource):
    """Runs the SQL models on DuckDB in this process or as Spark SQL on a Spark session.

    Both engines run the same model files and return the same tables (pf_platform_tests/
    test_sql_parity.py holds them to it), so switching the engine changes where the work runs,
    not what it computes.

    Attributes:
        engine: ``duckdb`` or ``spark``; the local profile takes it from ``PF_SQL_ENGINE``
            (default ``duckdb``).
        pyspark: the resource whose session the spark engine uses; give it the same instance as
            the ``pyspark`` resource key so one session (and its run config) serves both. A
            lazy resource starts its session on first use, so the duckdb engine never starts one.
    """

    engine: Literal["duckdb", "spark"] = "duckdb"
    pyspark: dg.ResourceDependency[LazyPySparkResource | PySparkResource | None] = None

    def run(
        self,
        variables: Mapping[str, object],
        inputs: Mapping[str, pa.Table],
        targets: list[str],
    ) -> dict[str, pa.Table]:
        """Runs the target models over the input tables.

        Args:
            variables: the values ``{{ var('name') }}`` renders.
            inputs: tables by source or model name; a model given here is not run.
            targets: the models to return.

        Returns:
            Each target's rows as an Arrow table, in the same canonical schema on either engine.
        """
        project = ModelProject(variables)
        if self.engine == "spark":
            if self.pyspark is None:
                raise ValueError("the spark SQL engine needs a pyspark resource; none was given")
            return project.run_spark(self.pyspark.spark_session, inputs, targets)
        return project.run_duckdb(inputs, targets)
