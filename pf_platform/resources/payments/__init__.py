"""Purple Flea payments API: client, error tree, wire models and the Dagster resource.

The client, errors and models import without Dagster, for Spark executors. The resource is
loaded on first access, so importing this package alone does not pull Dagster in.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pf_platform.resources.payments.client import (
    BatchOutcome,
    ClientSettings,
    EqualJitter,
    PurpleFleaClient,
    RateLimit,
    send_batches,
)
from pf_platform.resources.payments.errors import (
    APIConnectionError,
    APITimeoutError,
    AuthenticationError,
    IdempotencyConflictError,
    InsufficientFundsError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    PurpleFleaError,
    RateLimitError,
    ServerError,
    UnexpectedResponseError,
)
from pf_platform.resources.payments.models import (
    MAX_BATCH_SIZE,
    Balance,
    Escrow,
    EscrowRelease,
    TransactionRecord,
    Transfer,
    TransferResult,
)

if TYPE_CHECKING:
    from pf_platform.resources.payments.resource import PurpleFleaResource

__all__ = [
    "MAX_BATCH_SIZE",
    "APIConnectionError",
    "APITimeoutError",
    "AuthenticationError",
    "Balance",
    "BatchOutcome",
    "ClientSettings",
    "EqualJitter",
    "Escrow",
    "EscrowRelease",
    "IdempotencyConflictError",
    "InsufficientFundsError",
    "InvalidRequestError",
    "NotFoundError",
    "PermissionDeniedError",
    "PurpleFleaClient",
    "PurpleFleaError",
    "PurpleFleaResource",
    "RateLimit",
    "RateLimitError",
    "ServerError",
    "TransactionRecord",
    "Transfer",
    "TransferResult",
    "UnexpectedResponseError",
    "send_batches",
]


def __getattr__(name: str) -> Any:
    if name == "PurpleFleaResource":
        from pf_platform.resources.payments.resource import PurpleFleaResource

        return PurpleFleaResource
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
