"""Dagster resource that hands out configured Purple Flea clients."""

from __future__ import annotations

import dagster as dg
from pydantic import Field, field_validator

from pf_platform.resources.payments.client import PurpleFleaClient
from pf_platform.resources.payments.models import MAX_BATCH_SIZE
from pf_platform.settings import sandbox_url


class PurpleFleaResource(dg.ConfigurableResource):
    """Settings for talking to the Purple Flea payments API.

    Assets open a client per run and close it when done::

        async with purple_flea.get_client() as client:
            ...

    Attributes:
        base_url: root of the API; the local sandbox unless ``PF_API_BASE_URL`` says otherwise.
        api_key: bearer key, given as ``dg.EnvVar("PF_API_KEY")`` so the UI never shows it.
        batch_size: transfers per batch request, 1 to 1,000.
        concurrency: batch requests in flight at once; also the connection pool size.
        connect_timeout_s: seconds to establish a connection.
        read_timeout_s: seconds to wait for each chunk of a response.
        max_attempts: total tries per request, the first one included.
        backoff_initial_s: delay before the second attempt, doubled after each further one.
        backoff_max_s: ceiling of the backoff delay.
    """

    base_url: str = Field(default_factory=sandbox_url, description="Root URL of the API.")
    # repr=False keeps the key out of reprs, tracebacks and log lines that print the resource.
    api_key: str = Field(repr=False, description="Bearer API key (pf_live_... or pf_test_...).")
    batch_size: int = Field(default=MAX_BATCH_SIZE, description="Transfers per batch, 1-1000.")
    concurrency: int = Field(default=8, description="Batch requests in flight at once.")
    connect_timeout_s: float = Field(default=5.0, description="Connect timeout in seconds.")
    read_timeout_s: float = Field(default=30.0, description="Read timeout in seconds.")
    max_attempts: int = Field(default=5, description="Tries per request, the first included.")
    backoff_initial_s: float = Field(default=0.5, description="First retry delay in seconds.")
    backoff_max_s: float = Field(default=30.0, description="Largest retry delay in seconds.")

    @field_validator("batch_size")
    @classmethod
    def _check_batch_size(cls, value: int) -> int:
        if not 1 <= value <= MAX_BATCH_SIZE:
            raise ValueError(f"batch_size must be between 1 and {MAX_BATCH_SIZE}, got {value}")
        return value

    @field_validator("concurrency", "max_attempts")
    @classmethod
    def _check_positive(cls, value: int) -> int:
        if value < 1:
            raise ValueError(f"must be at least 1, got {value}")
        return value

    def get_client(self) -> PurpleFleaClient:
        """Builds a client from this configuration.

        Returns:
            A new client owning its own connection pool; use it as an async context manager
            inside one event loop (``asyncio.run``) so the pool is closed with it.
        """
        return PurpleFleaClient(
            self.base_url,
            self.api_key,
            connect_timeout_s=self.connect_timeout_s,
            read_timeout_s=self.read_timeout_s,
            write_timeout_s=self.read_timeout_s,
            max_connections=self.concurrency,
            max_attempts=self.max_attempts,
            backoff_initial_s=self.backoff_initial_s,
            backoff_max_s=self.backoff_max_s,
        )
