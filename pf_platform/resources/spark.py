"""The Spark session the Spark paths run on: ``local[*]`` here, the cluster's on Databricks.

Python workers are pinned to the interpreter running this process: a worker started from another
Python (the system one, say) has neither pyarrow nor pf_platform, and ``mapInPandas`` fails on
import. ``spark.pyspark.python`` is set explicitly rather than left to ``PYSPARK_PYTHON``.
"""

from __future__ import annotations

import os
import sys
from typing import Any

DEFAULT_MASTER = "local[*]"


def local_spark_config(master: str | None = None, **extra: str) -> dict[str, Any]:
    """Settings for a local session whose workers run this interpreter.

    Args:
        master: the Spark master; ``PF_SPARK_MASTER`` or ``local[*]`` by default. Tests use
            ``local[N,F]`` so that a failed task is retried (plain ``local`` never retries).
        extra: further settings, overriding these.
    """
    python = os.getenv("PYSPARK_PYTHON") or sys.executable
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
