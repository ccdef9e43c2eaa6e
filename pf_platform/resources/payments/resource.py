"""Dagster resource that hands out configured Purple Flea clients."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

import dagster as dg
from pydantic import Field, field_validator

from pf_platform.resources.payments.client import ClientSettings, PurpleFleaClient, RateLimit
from pf_platform.resources.payments.models import MAX_BATCH_SIZE
from pf_platform.settings import sandbox_url

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from pf_platform.payouts.fanout import FanOut


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
        rate_limit_rpm: the API budget in requests per minute, shared by every client of a
            run (Spark tasks each take an equal share); unset for no client-side pacing.
        rate_limit_burst: requests the budget allows at once; defaults to one second's worth.
        fan_out: where the day's batches are sent from: ``in_process`` (async httpx in the
            step's process) or ``spark`` (mapInPandas tasks on the ``pyspark`` session).
        spark_partitions: Spark tasks sending at once; 0 means the session's default
            parallelism.
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
    rate_limit_rpm: float | None = Field(
        default=None, description="API budget in requests per minute; unset for none."
    )
    rate_limit_burst: int | None = Field(
        default=None, description="Requests the budget allows at once (default: 1 s worth)."
    )
    fan_out: Literal["in_process", "spark"] = Field(
        default="in_process", description="Send batches in-process (httpx) or from Spark tasks."
    )
    spark_partitions: int = Field(
        default=0, description="Spark tasks sending at once; 0 = default parallelism."
    )

    @field_validator("batch_size")
    @classmethod
    def _check_batch_size(cls, value: int) -> int:
        if not 1 <= value <= MAX_BATCH_SIZE:
            raise ValueError(f"batch_size must be between 1 and {MAX_BATCH_SIZE}, got {value}")
        return value

    @field_validator("spark_partitions")
    @classmethod
    def _check_not_negative(cls, value: int) -> int:
        if value < 0:
            raise ValueError(f"must be 0 (default parallelism) or more, got {value}")
        return value

    @field_validator("concurrency", "max_attempts")
    @classmethod
    def _check_positive(cls, value: int) -> int:
        if value < 1:
            raise ValueError(f"must be at least 1, got {value}")
        return value

    def client_settings(self) -> ClientSettings:
        """This configuration as the plain values a client (here or in a Spark task) is built
        from."""
        rate_limit = None
        if self.rate_limit_rpm is not None:
            burst = self.rate_limit_burst or max(1, int(self.rate_limit_rpm // 60))
            rate_limit = RateLimit(self.rate_limit_rpm, burst)
        return ClientSettings(
            base_url=self.base_url,
            api_key=self.api_key,
            concurrency=self.concurrency,
            connect_timeout_s=self.connect_timeout_s,
            read_timeout_s=self.read_timeout_s,
            max_attempts=self.max_attempts,
            backoff_initial_s=self.backoff_initial_s,
            backoff_max_s=self.backoff_max_s,
            rate_limit=rate_limit,
        )

    def get_fan_out(self, spark: Callable[[], SparkSession]) -> FanOut:
        """The configured fan-out for a day's batches.

        Args:
            spark: returns the Spark session; called only by the ``spark`` fan-out, and only
                when there is something to send.
        """
        from pf_platform.payouts.fanout import InProcessFanOut, SparkFanOut

        if self.fan_out == "spark":
            return SparkFanOut(
                spark=spark,
                settings=self.client_settings(),
                batch_size=self.batch_size,
                partitions=self.spark_partitions,
            )
        return InProcessFanOut(self.get_client, self.batch_size, self.concurrency)

    def get_client(self) -> PurpleFleaClient:
        """Builds a client from this configuration.

        Returns:
            A new client owning its own connection pool; use it as an async context manager
            inside one event loop (``asyncio.run``) so the pool is closed with it.
        """
        return self.client_settings().build()
