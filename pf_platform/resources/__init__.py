"""Dagster resources: the payments API, the lake, MLflow and Spark.

``PurpleFleaResource`` is loaded on first access rather than at import, so executor-side code can
import ``pf_platform.resources.payments.client`` without loading Dagster.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pf_platform.resources.payments.resource import PurpleFleaResource

__all__ = ["PurpleFleaResource"]


def __getattr__(name: str) -> Any:
    if name == "PurpleFleaResource":
        from pf_platform.resources.payments.resource import PurpleFleaResource

        return PurpleFleaResource
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
