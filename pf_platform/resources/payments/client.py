"""Async HTTP client for the Purple Flea payments API.

One ``PurpleFleaClient`` owns one pooled ``httpx.AsyncClient``. Bodies travel as JSON written and
read by ``pf_platform.wire``, so an amount is an exact decimal literal on the wire and a
``Decimal`` in Python, never a float.

Retries are jittered exponential backoff (tenacity), capped in delay and in attempts. They cover
answers that say nothing about the request itself: no connection, a timeout, 429 and 5xx. A POST
is sent again only when the server cannot act on it twice, i.e. when every money-moving item
carries an idempotency key. When the attempts run out, the last typed error is raised.

A ``RateLimit`` paces every attempt through a token bucket (aiolimiter) before it leaves, so a
client stays inside its share of the API's budget instead of learning the limit from 429s; a 429
that still comes back is retried after its ``Retry-After``. ``ClientSettings`` is the picklable
recipe of a client, which a Spark task turns into its own client with its share of the budget.

Nothing here imports Dagster: Spark executors build this client directly.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any, Self
from urllib.parse import quote, urlsplit

import httpx
from aiolimiter import AsyncLimiter
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

from pf_platform import wire
from pf_platform.payouts.money import to_usdc
from pf_platform.resources.payments.errors import (
    APIConnectionError,
    APITimeoutError,
    PurpleFleaError,
    RateLimitError,
    UnexpectedResponseError,
    error_from_response,
)
from pf_platform.resources.payments.models import (
    MAX_BATCH_SIZE,
    Balance,
    Escrow,
    EscrowRelease,
    TransactionRecord,
    Transfer,
    TransferResult,
    wire_amount,
)

logger = logging.getLogger("pf_platform.payments")

# One line per HTTP request, logfmt-style; "-" marks a field that does not apply.
_REQUEST_LINE = (
    "method=%s path=%s status=%s request_id=%s items=%s idempotency_key=%s attempt=%d "
    "duration_ms=%.1f error=%s"
)

Jitter = Callable[[float], float]
Sleep = Callable[[float], Awaitable[None]]


class EqualJitter:
    """Spreads a backoff delay uniformly over its upper half.

    Keeping half of the delay guarantees real back-pressure after a 5xx, while the random half
    stops a fleet of workers that failed together from retrying together.

    Args:
        seed: seed for the private random generator; pass one to make delays repeatable.
    """

    def __init__(self, seed: int | None = None) -> None:
        self._random = random.Random(seed)

    def __call__(self, delay: float) -> float:
        return delay * self._random.uniform(0.5, 1.0)


@dataclass(frozen=True)
class RateLimit:
    """A request budget: ``requests_per_minute`` on average, at most ``burst`` at once.

    It is the token bucket the API itself enforces: ``burst`` tokens to start with, refilled at
    ``requests_per_minute / 60`` per second, one token per request attempt.

    Args:
        requests_per_minute: the sustained rate; must be positive.
        burst: the bucket's capacity; at least 1.
    """

    requests_per_minute: float
    burst: int

    def __post_init__(self) -> None:
        if self.requests_per_minute <= 0 or self.burst < 1:
            raise ValueError(
                f"a rate limit needs requests_per_minute > 0 and burst >= 1, got "
                f"{self.requests_per_minute} and {self.burst}"
            )

    def share(self, parts: int) -> RateLimit:
        """One of ``parts`` equal shares, for clients that spend one budget side by side.

        The burst is split too (never below one token), so the shares together never exceed
        the whole, even when all of them start at once.
        """
        if parts < 1:
            raise ValueError(f"parts must be at least 1, got {parts}")
        return RateLimit(self.requests_per_minute / parts, max(1, self.burst // parts))

    def floor_seconds(self, requests: int) -> float:
        """The least time ``requests`` attempts can take under this budget, from a full bucket."""
        return max(0, requests - self.burst) * 60.0 / self.requests_per_minute

    def limiter(self) -> AsyncLimiter:
        # aiolimiter's leaky bucket of capacity max_rate, draining max_rate per time_period, is
        # this token bucket read the other way round.
        return AsyncLimiter(self.burst, self.burst * 60.0 / self.requests_per_minute)


@dataclass(frozen=True, slots=True)
class _Reply:
    body: Any
    request_id: str | None
    attempts: int


def _is_transient(exc: BaseException) -> bool:
    # 409 is deliberately not transient here, although some APIs use it for a lock held by a
    # concurrent request and retry it: in this API it means the idempotency key was already
    # used with a different body, and resending the same body gets the same refusal.
    return isinstance(exc, PurpleFleaError) and exc.should_retry


class PurpleFleaClient:
    """Async client for the payments API, to be used as an async context manager.

    Example::

        async with PurpleFleaClient(base_url, api_key) as client:
            results = await client.batch_transfer(transfers)

    Args:
        base_url: root of the API, e.g. ``http://127.0.0.1:8765`` for the sandbox.
        api_key: ``pf_live_...`` or ``pf_test_...``; kept only in the default headers of the
            httpx client (whose repr masks it), never logged and never put into an error.
        connect_timeout_s: seconds to establish a connection.
        read_timeout_s: seconds to wait for each chunk of the response.
        write_timeout_s: seconds to send each chunk of the request.
        pool_timeout_s: seconds to wait for a free pooled connection.
        max_connections: size of the connection pool; match it to the request concurrency.
        max_attempts: total tries per request, the first one included; at least 1.
        backoff_initial_s: delay before the second attempt, doubled after every further one.
        backoff_max_s: ceiling of the exponential delay.
        retry_after_max_s: ceiling on how long a ``Retry-After`` header can make us wait.
        rate_limit: paces every request attempt; ``None`` sends as fast as the pool allows.
        jitter: maps the exponential delay to the delay actually slept; defaults to
            ``EqualJitter(seed)``. Tests pass ``lambda d: d`` to pin it.
        seed: seed of the default jitter.
        sleep: coroutine used to wait between attempts; defaults to ``asyncio.sleep``.
        transport: an httpx transport to use instead of the default one (tests); the pool
            limits above then do not apply.

    Raises:
        ValueError: a live key would be sent over plain HTTP, or an argument is out of range.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 30.0,
        write_timeout_s: float = 30.0,
        pool_timeout_s: float = 30.0,
        max_connections: int = 8,
        max_attempts: int = 5,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
        retry_after_max_s: float = 60.0,
        rate_limit: RateLimit | None = None,
        jitter: Jitter | None = None,
        seed: int | None = None,
        sleep: Sleep | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not api_key:
            raise ValueError("api_key must not be empty")
        if api_key.startswith("pf_live_") and urlsplit(base_url).scheme != "https":
            raise ValueError("refusing to send a live API key over plain http")
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
        if max_connections < 1:
            raise ValueError(f"max_connections must be at least 1, got {max_connections}")

        self.base_url = base_url
        self.max_attempts = max_attempts
        self._backoff = wait_exponential(multiplier=backoff_initial_s, max=backoff_max_s)
        self._retry_after_max_s = retry_after_max_s
        self.rate_limit = rate_limit
        self._limiter = rate_limit.limiter() if rate_limit is not None else None
        self._jitter = jitter if jitter is not None else EqualJitter(seed)
        self._sleep = sleep if sleep is not None else asyncio.sleep
        self._http = httpx.AsyncClient(
            base_url=base_url,
            headers={
                "Authorization": f"Bearer {api_key}",
                "Accept": "application/json",
                "User-Agent": "pf-platform",
            },
            timeout=httpx.Timeout(
                connect=connect_timeout_s,
                read=read_timeout_s,
                write=write_timeout_s,
                pool=pool_timeout_s,
            ),
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
            transport=transport,
        )

    def __repr__(self) -> str:
        return f"PurpleFleaClient(base_url={self.base_url!r})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Closes the pooled connections."""
        await self._http.aclose()

    # -- wallet -----------------------------------------------------------------------------

    async def batch_transfer(self, transfers: Sequence[Transfer]) -> list[TransferResult]:
        """Sends up to 1,000 transfers in one request.

        The request is retried on transient failures; every item carries its idempotency key,
        so the server pays each item at most once however often it is sent, and answers a
        repeat with the stored outcome (``replayed=True``).

        Args:
            transfers: 1 to 1,000 transfers.

        Returns:
            One result per transfer, in the order sent. Per-item failures (unknown agent,
            insufficient funds, ...) are results with ``success=False``, not exceptions.

        Raises:
            ValueError: the batch is empty or larger than 1,000.
            PurpleFleaError: the request as a whole failed, after any retries.
        """
        results, _ = await self._batch_transfer(transfers)
        return results

    async def _batch_transfer(
        self, transfers: Sequence[Transfer]
    ) -> tuple[list[TransferResult], int]:
        if not transfers:
            raise ValueError("a batch needs at least one transfer")
        if len(transfers) > MAX_BATCH_SIZE:
            raise ValueError(
                f"a batch holds at most {MAX_BATCH_SIZE} transfers, got {len(transfers)}"
            )

        reply = await self._request(
            "POST",
            "/wallet/batch-transfer",
            payload={"transfers": [t.to_wire() for t in transfers]},
            # Transfer refuses to exist without an idempotency key, so a resend is safe.
            retry_safe=True,
            items=len(transfers),
            idempotency_key=transfers[0].idempotency_key,
        )

        raw = reply.body.get("results") if isinstance(reply.body, dict) else None
        if not isinstance(raw, list) or len(raw) != len(transfers):
            raise UnexpectedResponseError(
                f"expected {len(transfers)} results, got "
                f"{len(raw) if isinstance(raw, list) else 'none'}",
                http_status=200,
                request_id=reply.request_id,
                idempotency_key=transfers[0].idempotency_key,
            )
        results = self._parse(reply, lambda: [TransferResult.from_wire(item) for item in raw])
        return results, reply.attempts

    async def list_balances(
        self, limit: int = MAX_BATCH_SIZE, cursor: str | None = None
    ) -> tuple[list[Balance], str | None]:
        """Fetches one page of wallet balances.

        Args:
            limit: page size, 1 to 1,000.
            cursor: the ``next_cursor`` of the previous page; None for the first page.

        Returns:
            The page's balances and the cursor of the next page (None after the last page).
        """
        if not 1 <= limit <= MAX_BATCH_SIZE:
            raise ValueError(f"limit must be between 1 and {MAX_BATCH_SIZE}, got {limit}")
        params: dict[str, Any] = {"limit": limit}
        if cursor is not None:
            params["cursor"] = cursor

        reply = await self._request("GET", "/wallet/balances", params=params, retry_safe=True)

        def parse() -> tuple[list[Balance], str | None]:
            agents = [Balance.from_wire(item) for item in reply.body["agents"]]
            next_cursor = reply.body.get("next_cursor")
            return agents, (None if next_cursor in (None, "") else str(next_cursor))

        return self._parse(reply, parse)

    async def iter_balances(self, page_size: int = MAX_BATCH_SIZE) -> AsyncIterator[list[Balance]]:
        """Streams every wallet balance, one page at a time.

        Only one page is held at once, so a snapshot of any number of agents runs in bounded
        memory.

        Args:
            page_size: agents per request, 1 to 1,000.

        Yields:
            Non-empty lists of balances, in the server's order.
        """
        cursor: str | None = None
        while True:
            page, cursor = await self.list_balances(limit=page_size, cursor=cursor)
            if page:
                yield page
            if cursor is None:
                return

    async def get_transactions(self, idempotency_key: str) -> list[TransactionRecord]:
        """Looks up the committed transactions recorded under an idempotency key.

        This is how an unknown outcome (timeout, dropped connection) is reconciled: an empty
        list means the transfer never committed and may be sent again with the same key.

        Args:
            idempotency_key: the key the transfer was (or may have been) sent with.

        Returns:
            The matching transactions; empty when none committed.
        """
        reply = await self._request(
            "GET",
            "/wallet/transactions",
            params={"idempotency_key": idempotency_key},
            retry_safe=True,
            idempotency_key=idempotency_key,
        )
        return self._parse(
            reply,
            lambda: [TransactionRecord.from_wire(t) for t in reply.body["transactions"]],
        )

    # -- escrow -----------------------------------------------------------------------------

    async def create_escrow(
        self,
        amount_usdc: Decimal,
        eligible_agents: Sequence[str],
        release_condition: str | Mapping[str, Any],
        expiry_seconds: int,
        memo: str,
        *,
        referrer_agent_id: str | None = None,
        winners: int | None = None,
        idempotency_key: str | None = None,
    ) -> Escrow:
        """Locks an amount in escrow for one of the eligible agents.

        Args:
            amount_usdc: amount to hold, at most six decimal places.
            eligible_agents: agents that may receive the release.
            release_condition: what triggers the release: text, or an object such as
                ``{"experiment": ..., "metric": "f1", "threshold": 0.9}``; stored as given.
            expiry_seconds: after this many seconds an unreleased escrow refunds the payer.
            memo: free text stored with the escrow.
            referrer_agent_id: agent that earns the referral share of the platform fee.
            winners: how many eligible agents share the amount equally (server default 1).
            idempotency_key: makes the call safe to resend; without one it is sent exactly once
                and a transient failure is raised to the caller instead of retried.

        Returns:
            The escrow as created (or, for a repeated key, as first created).
        """
        payload: dict[str, Any] = {
            "amount_usdc": wire_amount(to_usdc(amount_usdc)),
            "eligible_agents": list(eligible_agents),
            "release_condition": (
                dict(release_condition)
                if isinstance(release_condition, Mapping)
                else release_condition
            ),
            "expiry_seconds": expiry_seconds,
            "memo": memo,
        }
        if referrer_agent_id is not None:
            payload["referrer_agent_id"] = referrer_agent_id
        if winners is not None:
            payload["winners"] = winners
        headers: dict[str, str] = {}
        if idempotency_key:
            payload["idempotency_key"] = idempotency_key
            headers["Idempotency-Key"] = idempotency_key

        reply = await self._request(
            "POST",
            "/escrow/create",
            payload=payload,
            headers=headers,
            retry_safe=bool(idempotency_key),
            idempotency_key=idempotency_key,
        )
        return self._parse(reply, lambda: Escrow.from_wire(reply.body))

    async def release_escrow(
        self, escrow_id: str, recipient_agent_id: str, memo: str = ""
    ) -> EscrowRelease:
        """Releases an escrow to one eligible agent, net of the platform fee.

        Args:
            escrow_id: the escrow to release.
            recipient_agent_id: the eligible agent to pay.
            memo: free text stored with the release transaction.

        Returns:
            The release, with its transaction id and fee split.

        Raises:
            InvalidRequestError: the agent is not eligible (``not_eligible``), every winner slot
                is taken (``escrow_not_locked``) or the escrow expired and was refunded
                (``escrow_expired``).
            NotFoundError: no escrow has this id.
        """
        reply = await self._request(
            "POST",
            "/escrow/release",
            payload={
                "escrow_id": escrow_id,
                "memo": memo,
                "recipient_agent_id": recipient_agent_id,
            },
            # The server keys a release on (escrow, recipient) and answers a repeat with the
            # stored outcome, so resending cannot pay twice.
            retry_safe=True,
        )
        return self._parse(
            reply,
            lambda: EscrowRelease.from_wire(
                reply.body, escrow_id=escrow_id, recipient_agent_id=recipient_agent_id
            ),
        )

    async def get_escrow(self, escrow_id: str) -> Escrow:
        """Fetches the current state of an escrow.

        Raises:
            NotFoundError: no escrow has this id.
        """
        reply = await self._request("GET", f"/escrow/{quote(escrow_id, safe='')}", retry_safe=True)
        return self._parse(reply, lambda: Escrow.from_wire(reply.body))

    async def health(self) -> dict[str, Any]:
        """Asks the server whether it is up; returns its status document."""
        reply = await self._request("GET", "/health", retry_safe=True)
        return reply.body if isinstance(reply.body, dict) else {"body": reply.body}

    # -- transport --------------------------------------------------------------------------

    def _wait(self, state: RetryCallState) -> float:
        """Seconds to sleep before the next attempt."""
        delay = self._jitter(self._backoff(state))
        error = state.outcome.exception() if state.outcome is not None else None
        if isinstance(error, RateLimitError) and error.retry_after is not None:
            # Retrying before the server's own deadline only buys another 429.
            delay = max(delay, min(error.retry_after, self._retry_after_max_s))
        return delay

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        payload: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        retry_safe: bool,
        items: int | None = None,
        idempotency_key: str | None = None,
    ) -> _Reply:
        content = None
        if payload is not None:
            content = wire.encode(payload)
            headers = {**(headers or {}), "Content-Type": "application/json"}
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug("request_body method=%s path=%s body=%s", method, path, content)

        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.max_attempts if retry_safe else 1),
            wait=self._wait,
            retry=retry_if_exception(_is_transient),
            sleep=self._sleep,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                if self._limiter is not None:
                    await self._limiter.acquire()
                return await self._send_once(
                    method,
                    path,
                    params=params,
                    content=content,
                    headers=headers,
                    attempt=attempt.retry_state.attempt_number,
                    items=items,
                    idempotency_key=idempotency_key,
                )
        raise AssertionError("unreachable: tenacity either returns or re-raises")

    async def _send_once(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None,
        content: bytes | None,
        headers: dict[str, str] | None,
        attempt: int,
        items: int | None,
        idempotency_key: str | None,
    ) -> _Reply:
        started = time.perf_counter()
        status: int | str = "-"
        request_id: str | None = None
        failure = "-"
        try:
            try:
                response = await self._http.request(
                    method, path, params=params, content=content, headers=headers
                )
            except httpx.TimeoutException as exc:
                raise APITimeoutError(
                    f"{method} {path} timed out ({type(exc).__name__})",
                    idempotency_key=idempotency_key,
                ) from exc
            except httpx.RequestError as exc:
                raise APIConnectionError(
                    f"{method} {path} failed: {type(exc).__name__}: {exc}",
                    idempotency_key=idempotency_key,
                ) from exc

            status = response.status_code
            request_id = response.headers.get("x-request-id")
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug(
                    "response_body method=%s path=%s request_id=%s body=%s",
                    method,
                    path,
                    request_id,
                    response.content,
                )
            if not response.is_success:
                raise error_from_response(response, idempotency_key=idempotency_key)
            try:
                body = wire.decode(response.content)
            except wire.DecodeError as exc:
                raise UnexpectedResponseError(
                    f"{method} {path} answered {status} with a body that is not JSON",
                    http_status=status,
                    request_id=request_id,
                    idempotency_key=idempotency_key,
                ) from exc
            return _Reply(body=body, request_id=request_id, attempts=attempt)
        except PurpleFleaError as exc:
            exc.attempts = attempt
            failure = exc.code or type(exc).__name__
            raise
        finally:
            logger.info(
                _REQUEST_LINE,
                method,
                path,
                status,
                request_id or "-",
                items if items is not None else "-",
                idempotency_key or "-",
                attempt,
                (time.perf_counter() - started) * 1000.0,
                failure,
            )

    @staticmethod
    def _parse(reply: _Reply, build: Callable[[], Any]) -> Any:
        """Runs ``build`` over a 2xx body, turning a body of the wrong shape into a typed error."""
        try:
            return build()
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            # InvalidAmountError is a ValueError: an amount the contract forbids lands here too.
            raise UnexpectedResponseError(
                f"response body does not match the contract: {type(exc).__name__}: {exc}",
                http_status=200,
                request_id=reply.request_id,
            ) from exc


@dataclass(frozen=True)
class ClientSettings:
    """Everything needed to build a ``PurpleFleaClient``, as plain picklable values.

    The Dagster resource produces one; the in-process fan-out builds its client from it, and a
    Spark task builds its own from the copy shipped with the task (``share`` gives it its part of
    the request budget and of the concurrency).

    Attributes:
        base_url: root of the API.
        api_key: bearer key; excluded from the repr.
        concurrency: requests in flight at once, and the connection pool size.
        rate_limit: the request budget, or ``None`` for none.
        other fields: as the ``PurpleFleaClient`` arguments of the same name.
    """

    base_url: str
    api_key: str = field(repr=False)
    concurrency: int = 8
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 30.0
    max_attempts: int = 5
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    retry_after_max_s: float = 60.0
    rate_limit: RateLimit | None = None

    def share(self, parts: int) -> ClientSettings:
        """Settings for one of ``parts`` clients running at once: each gets an equal part of
        the concurrency and of the rate limit, so together they stay within the whole."""
        return replace(
            self,
            concurrency=max(1, self.concurrency // parts),
            rate_limit=self.rate_limit.share(parts) if self.rate_limit is not None else None,
        )

    def build(self) -> PurpleFleaClient:
        """A new client; open it inside the event loop that will use it."""
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
            retry_after_max_s=self.retry_after_max_s,
            rate_limit=self.rate_limit,
        )


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    """What became of one batch sent by ``send_batches``.

    Exactly one of ``results`` and ``error`` is set. With ``error`` set, the server may or may
    not have committed the batch (a timeout, say): mark its transfers unknown and reconcile
    them by idempotency key before sending anything again.

    Attributes:
        index: position of the batch in the input.
        transfers: the batch as sent.
        results: per-transfer results, in the order sent.
        error: the error raised after the last attempt.
        attempts: how many times the request was sent.
        duration_ms: wall time for the batch, backoff included.
    """

    index: int
    transfers: tuple[Transfer, ...]
    results: list[TransferResult] | None
    error: PurpleFleaError | None
    attempts: int
    duration_ms: float


OnResult = Callable[[BatchOutcome], Awaitable[None] | None]


async def send_batches(
    client: PurpleFleaClient,
    batches: Iterable[Sequence[Transfer]],
    concurrency: int,
    on_result: OnResult | None = None,
) -> list[BatchOutcome]:
    """Sends many batches with at most ``concurrency`` requests in flight.

    A fixed pool of workers pulls batches from ``batches`` as they free up, so a lazy iterable
    of any length is consumed at the pace of the API and never materialized up front. A batch
    that fails after its retries does not stop the others; its error is reported in its outcome.

    Args:
        client: an open client; its connection pool should be at least ``concurrency``.
        batches: the batches, each 1 to 1,000 transfers.
        concurrency: maximum number of requests in flight.
        on_result: called (or awaited, if it returns an awaitable) with each outcome as soon as
            that batch finishes, e.g. to update the ledger row by row.

    Returns:
        Every outcome, in the order of ``batches``.
    """
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, got {concurrency}")

    pending = iter(enumerate(batches))
    outcomes: dict[int, BatchOutcome] = {}

    async def worker() -> None:
        # Sharing one iterator is safe: next() runs to completion between awaits.
        for index, batch in pending:
            outcome = await _send_batch(client, index, batch)
            outcomes[index] = outcome
            if on_result is not None:
                returned = on_result(outcome)
                if inspect.isawaitable(returned):
                    await returned

    async with asyncio.TaskGroup() as group:
        for _ in range(concurrency):
            group.create_task(worker())

    return [outcomes[i] for i in range(len(outcomes))]


async def _send_batch(
    client: PurpleFleaClient, index: int, batch: Sequence[Transfer]
) -> BatchOutcome:
    started = time.perf_counter()
    try:
        results, attempts = await client._batch_transfer(batch)
    except PurpleFleaError as exc:
        return BatchOutcome(
            index=index,
            transfers=tuple(batch),
            results=None,
            error=exc,
            attempts=exc.attempts or 1,
            duration_ms=(time.perf_counter() - started) * 1000.0,
        )
    return BatchOutcome(
        index=index,
        transfers=tuple(batch),
        results=results,
        error=None,
        attempts=attempts,
        duration_ms=(time.perf_counter() - started) * 1000.0,
    )
