"""Typed failures of the Purple Flea payments API.

Every failure the client raises is a ``PurpleFleaError``; the subclass names the cause::

    PurpleFleaError                  message, http_status, request_id, code, idempotency_key
    ├── APIConnectionError           no answer: refused, reset, dropped (should_retry)
    │   └── APITimeoutError          connect, read, write or pool timeout (should_retry)
    ├── AuthenticationError          401: missing, unknown or revoked key
    ├── PermissionDeniedError        403: the key may not do this
    ├── InvalidRequestError          other 4xx (400, 410, 409 escrow_not_locked...); ``code``
    │   └── NotFoundError            404: no such escrow or resource
    ├── RateLimitError               429; ``retry_after`` in seconds (should_retry)
    ├── IdempotencyConflictError     409 idempotency_conflict: a key reused for another body
    ├── InsufficientFundsError       the payer cannot cover the amount
    ├── ServerError                  5xx (should_retry)
    └── UnexpectedResponseError      a status or body outside the contract

``should_retry`` only says the failure is transient. Whether the request may be sent again is
the client's decision: a POST is resent only when it cannot move money twice.

No error text or repr ever holds an API key: messages pass through ``redact_secrets`` in case a
server or proxy echoes one back.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from pf_platform import wire

# Anything shaped like a Purple Flea key, live or sandbox.
_KEY_PATTERN = re.compile(r"pf_(?:live|test)_[A-Za-z0-9_\-]+")
_REDACTED = "pf_***"


def redact_secrets(text: str) -> str:
    """Returns ``text`` with every Purple Flea API key replaced by a placeholder."""
    return _KEY_PATTERN.sub(_REDACTED, text)


class PurpleFleaError(Exception):
    """Base of every payments API failure.

    Attributes:
        message: human-readable reason, with any API key redacted.
        http_status: status of the response, or None when there was no response.
        request_id: the server's ``X-Request-Id``, or None when there was no response.
        code: the machine-readable error code from the body, e.g. ``unknown_agent``.
        idempotency_key: the (first) idempotency key the failed request carried, if any.
        attempts: how many times the request was sent before this error was raised.
    """

    should_retry: bool = False

    def __init__(
        self,
        message: str,
        *,
        http_status: int | None = None,
        request_id: str | None = None,
        code: str | None = None,
        idempotency_key: str | None = None,
    ) -> None:
        self.message = redact_secrets(message)
        self.http_status = http_status
        self.request_id = request_id
        self.code = code
        self.idempotency_key = idempotency_key
        self.attempts: int | None = None
        super().__init__(self.message)

    def __str__(self) -> str:
        if self.request_id:
            return f"{self.request_id}: {self.message}"
        return self.message

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(message={self.message!r}, http_status={self.http_status!r}, "
            f"request_id={self.request_id!r}, code={self.code!r})"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        # The keyword-only constructor would not survive the default pickling of exceptions, and
        # errors do cross process boundaries (Spark tasks, multiprocessing pools).
        return (_rebuild_error, (type(self), self.__dict__.copy()))


class APIConnectionError(PurpleFleaError):
    """The request got no usable answer; the server may or may not have acted on it."""

    should_retry = True


class APITimeoutError(APIConnectionError):
    """The request timed out while connecting, sending, waiting or taking a pooled connection."""


class AuthenticationError(PurpleFleaError):
    """The API key is missing, unknown or revoked (401)."""


class PermissionDeniedError(PurpleFleaError):
    """The API key is valid but not allowed to perform this call (403)."""


class InvalidRequestError(PurpleFleaError):
    """The server refused the request as given; sending it again cannot succeed."""


class NotFoundError(InvalidRequestError):
    """The addressed resource does not exist (404)."""


class RateLimitError(PurpleFleaError):
    """Too many requests (429).

    Attributes:
        retry_after: seconds the server asked us to wait, or None when it did not say.
    """

    should_retry = True

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class IdempotencyConflictError(PurpleFleaError):
    """An idempotency key was already used for a different request (409).

    Attributes:
        keys: the conflicting idempotency keys the server named.
    """

    def __init__(self, message: str, *, keys: list[str] | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.keys = list(keys or [])


class InsufficientFundsError(PurpleFleaError):
    """The paying wallet cannot cover the amount."""


class ServerError(PurpleFleaError):
    """The server failed (5xx), including injected faults in the sandbox."""

    should_retry = True


class UnexpectedResponseError(PurpleFleaError):
    """The response has a status or a body the wire contract does not describe."""


def _rebuild_error(cls: type[PurpleFleaError], state: dict[str, Any]) -> PurpleFleaError:
    error = cls.__new__(cls)
    Exception.__init__(error, state.get("message", ""))
    error.__dict__.update(state)
    return error


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Reads a ``Retry-After`` header as a number of seconds to wait.

    Args:
        value: the header value, either delta-seconds (``"3"``) or an HTTP-date
            (``"Wed, 21 Oct 2026 07:28:00 GMT"``).
        now: the current time, for tests; defaults to the system clock in UTC.

    Returns:
        Seconds to wait, never negative; None when the header is absent or unreadable.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None

    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        # nan and inf would poison the backoff arithmetic downstream.
        return max(seconds, 0.0) if math.isfinite(seconds) else None

    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        # RFC 9110 dates are always GMT; the obsolete forms parse as naive.
        when = when.replace(tzinfo=UTC)
    current = now or datetime.now(UTC)
    return max((when - current).total_seconds(), 0.0)


def _error_body(response: httpx.Response) -> dict[str, Any]:
    """The ``error`` object of a response, or an empty dict when the body has none."""
    try:
        body = wire.decode(response.content)
    except wire.DecodeError:
        return {}
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return body["error"]
    return {}


def error_from_response(
    response: httpx.Response, *, idempotency_key: str | None = None
) -> PurpleFleaError:
    """Builds the typed error for a non-2xx response.

    Args:
        response: the failed response; its body should be ``{"error": {"code", "message"}}``
            but a missing or malformed body still yields an error of the right class.
        idempotency_key: the (first) idempotency key the request carried, for the error text.

    Returns:
        An instance of the ``PurpleFleaError`` subclass matching the status and code.
    """
    status = response.status_code
    error = _error_body(response)
    code = error.get("code") if isinstance(error.get("code"), str) else None
    message = error.get("message") if isinstance(error.get("message"), str) else None
    if not message:
        message = f"HTTP {status} {response.reason_phrase}".strip()
    common: dict[str, Any] = {
        "http_status": status,
        "request_id": response.headers.get("x-request-id"),
        "code": code,
        "idempotency_key": idempotency_key,
    }

    if code == "insufficient_funds":
        return InsufficientFundsError(message, **common)
    if status == 401:
        return AuthenticationError(message, **common)
    if status == 403:
        return PermissionDeniedError(message, **common)
    if status == 404:
        return NotFoundError(message, **common)
    if status == 409 and code in ("idempotency_conflict", None):
        raw_keys = error.get("keys")
        keys = [str(k) for k in raw_keys] if isinstance(raw_keys, list) else []
        return IdempotencyConflictError(message, keys=keys, **common)
    if status == 429:
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        return RateLimitError(message, retry_after=retry_after, **common)
    if 400 <= status < 500:
        return InvalidRequestError(message, **common)
    if status >= 500:
        return ServerError(message, **common)
    return UnexpectedResponseError(message, **common)
