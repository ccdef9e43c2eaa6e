"""The MLflow tracking store as a Dagster resource."""

from __future__ import annotations

from typing import TYPE_CHECKING

import dagster as dg
from pydantic import Field

from pf_platform.escrow.tracking import tracking_client, tracking_uri

if TYPE_CHECKING:
    from mlflow import MlflowClient


class MlflowResource(dg.ConfigurableResource):
    """Where the escrow sensor reads runs and where releases are written back.

    Attributes:
        tracking_uri: the tracking store; ``sqlite:///$PF_HOME/mlflow/mlflow.db`` unless
            ``PF_MLFLOW_TRACKING_URI`` names another.
    """

    tracking_uri: str = Field(default_factory=tracking_uri, description="MLflow tracking URI.")

    def get_client(self) -> MlflowClient:
        """A client for the store (a local sqlite store's folder is created if needed)."""
        return tracking_client(self.tracking_uri)
