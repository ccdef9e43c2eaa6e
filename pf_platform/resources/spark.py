"""The Spark session the Spark paths run on: ``local[*]`` here, the cluster's on Databricks.

Python workers are pinned to the project's interpreter: a worker started from another Python (the
system one, say) has neither pyarrow nor pf_platform, and ``mapInPandas`` fails on import. A local
session takes its workers' Python from ``PYSPARK_PYTHON`` in the driver's environment (the
``spark.pyspark.python`` setting only reaches spark-submit), so the resource sets that variable
before it starts the session, and writes the setting too for anything launched through submit.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from dagster_pyspark import LazyPySparkResource
from pydantic import Field

DEFAULT_MASTER = "local[*]"


def worker_python() -> str:
    """The interpreter Spark's Python workers run: ``PYSPARK_PYTHON`` if set, else this one."""
    return os.getenv("PYSPARK_PYTHON") or sys.executable


def local_spark_config(master: str | None = None, **extra: str) -> dict[str, Any]:
    """Settings for a local session whose workers run this interpreter.

    Args:
        master: the Spark master; ``PF_SPARK_MASTER`` or ``local[*]`` by default. Tests use
            ``local[N,F]`` so that a failed task is retried (plain ``local`` never retries).
        extra: further settings, overriding these.
    """
    python = worker_python()
    config: dict[str, Any] = {
        "spark.master": master or os.getenv("PF_SPARK_MASTER", DEFAULT_MASTER),
        "spark.app.name": "pf_platform",
        "spark.pyspark.python": python,
        "spark.pyspark.driver.python": python,
        "spark.executorEnv.PYSPARK_PYTHON": python,
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.shuffle.partitions": "4",
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
    }
    config.update(extra)
    return config


def pin_worker_python(python: str | None = None) -> str:
    """Makes sessions started from now on in this process run their workers on ``python``."""
    python = python or worker_python()
    os.environ["PYSPARK_PYTHON"] = python
    return python


class SparkResource(LazyPySparkResource):
    """The ``pyspark`` resource: a session started on first use, workers on the project's Python.

    Attributes:
        spark_config: the session's settings (``local_spark_config()`` locally; on a cluster,
            usually nothing, since the session already exists there).
        worker_python: the interpreter of the Python workers of a session this resource starts.
    """

    worker_python: str = Field(
        default_factory=worker_python, description="Python of the Spark workers."
    )

    def _init_session(self) -> None:
        pin_worker_python(self.worker_python)
        super()._init_session()
