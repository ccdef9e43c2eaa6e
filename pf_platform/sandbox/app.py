"""The sandbox's HTTP API: a Starlette app over the ledger, wrapped in the fault middleware.

Routes (JSON bodies read and written by ``pf_platform.wire``, so every amount is an exact decimal
literal):

- ``GET /health`` (no key).
- ``POST /wallet/batch-transfer``, ``GET /wallet/balances``, ``GET /wallet/transactions``.
- ``POST /escrow/create``, ``POST /escrow/release``, ``GET /escrow/{escrow_id}``.
- ``/admin/...`` (treasury key): ``agents``, ``fund``, ``balances``, ``faults``, ``clock``, ``stats``,
  ``audit``, ``escrow/sweep``.

Every response carries ``X-Request-Id``; every error body is
``{"error": {"code": ..., "message": ...}}``. Requests under ``/wallet`` and ``/escrow`` pass
through the fault injector and the rate limit; ``/health`` and ``/admin`` never do. Faults
that act "after commit" apply to POSTs only, since a GET commits nothing.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pf_platform import wire
from pf_platform.sandbox.faults import FaultInjector, FaultPlan, InvalidKnobError
from pf_platform.sandbox.ledger import (
    BTC_PLACES,
    ETH_PLACES,
    MAX_BATCH_SIZE,
    MAX_PAGE_SIZE,
    TREASURY,
    Caller,
    Ledger,
    LedgerError,
    iso_utc,
    parse_amount,
    parse_crypto_amount,
    parse_escrow_spec,
    parse_transfer,
)

logger = logging.getLogger("pf_platform.sandbox")

DEFAULT_PAGE_SIZE = 100
# A century: any escrow expires within it, and the clock stays a finite timestamp.
MAX_CLOCK_ADVANCE_SECONDS = 100 * 365 * 24 * 3600
MONEY_PREFIXES = ("/wallet/", "/escrow/")

_STATUS_OF_CODE = {
    "invalid_request": 400,
    "invalid_amount": 400,
    "batch_too_large": 400,
    "unknown_agent": 400,
    "insufficient_funds": 400,
    "not_eligible": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "not_found": 404,
    "idempotency_conflict": 409,
    "escrow_not_locked": 409,
    "escrow_expired": 410,
}


class ApiError(Exception):
    """An error answer: HTTP status, machine-readable code, message and extra body fields."""

    def __init__(self, status: int, code: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details


class JsonResponse(Response):
    """A JSON response whose ``Decimal`` values are written as exact numbers."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return wire.encode(content)


def error_body(code: str, message: str, **details: Any) -> dict[str, Any]:
    """The body of every error answer."""
    return {"error": {"code": code, "message": message, **details}}


class SandboxStats:
    """Counters served by ``GET /admin/stats``."""

    def __init__(self) -> None:
        self.requests = 0
        self.by_status: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()
        self.transfers_committed = 0
        self.transfers_failed = 0
        self.replays = 0
        self.escrows_created = 0
        self.escrow_releases = 0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready snapshot."""
        return {
            "requests": self.requests,
            "by_status": dict(sorted(self.by_status.items())),
            "responses_429": self.by_status.get("429", 0),
            "transfers_committed": self.transfers_committed,
            "transfers_failed": self.transfers_failed,
            "replays": self.replays,
            "escrows_created": self.escrows_created,
            "escrow_releases": self.escrow_releases,
            "faults": dict(sorted(self.faults.items())),
        }


def create_app(ledger: Ledger, faults: FaultInjector) -> ASGIApp:
    """Builds the ASGI app: the routes, wrapped in request ids, logging and faults.

    Args:
        ledger: the ledger to serve; its clock is the server clock.
        faults: the fault injector, also reachable through ``/admin/faults``.
    """
    stats = SandboxStats()
    api = _Api(ledger, faults, stats)
    routes = [
        Route("/health", api.health, methods=["GET"]),
        Route("/wallet/batch-transfer", api.batch_transfer, methods=["POST"]),
        Route("/wallet/balances", api.balances, methods=["GET"]),
        Route("/wallet/transactions", api.transactions, methods=["GET"]),
        Route("/escrow/create", api.create_escrow, methods=["POST"]),
        Route("/escrow/release", api.release_escrow, methods=["POST"]),
        Route("/escrow/{escrow_id}", api.get_escrow, methods=["GET"]),
        Route("/admin/agents", api.register_agents, methods=["POST"]),
        Route("/admin/fund", api.fund, methods=["POST"]),
        Route("/admin/balances", api.set_balances, methods=["POST"]),
        Route("/admin/faults", api.get_faults, methods=["GET"]),
        Route("/admin/faults", api.set_faults, methods=["POST"]),
        Route("/admin/clock", api.clock, methods=["GET", "POST"]),
        Route("/admin/stats", api.get_stats, methods=["GET"]),
        Route("/admin/audit", api.audit, methods=["GET"]),
        Route("/admin/escrow/sweep", api.sweep, methods=["POST"]),
    ]
    app = Starlette(
        routes=routes,
        exception_handlers={
            ApiError: _api_error,
            LedgerError: _ledger_error,
            HTTPException: _http_error,
        },
    )
    return FaultMiddleware(app, faults, stats)


class _Api:
    """The route handlers, sharing one ledger, fault injector and stats."""

    def __init__(self, ledger: Ledger, faults: FaultInjector, stats: SandboxStats) -> None:
        self.ledger = ledger
        self.faults = faults
        self.stats = stats

    # -- public and wallet ------------------------------------------------------------------

    async def health(self, request: Request) -> Response:
        return JsonResponse({"status": "ok"})

    async def batch_transfer(self, request: Request) -> Response:
        caller = self._caller(request, treasury=True)
        body = await _json_body(request)
        transfers = body.get("transfers")
        if not isinstance(transfers, list) or not transfers:
            raise ApiError(400, "invalid_request", "transfers must be a non-empty list")
        if len(transfers) > MAX_BATCH_SIZE:
            raise ApiError(
                400,
                "batch_too_large",
                f"{len(transfers)} transfers in one request; the limit is {MAX_BATCH_SIZE}",
            )

        results = self.ledger.batch_transfer(
            caller.agent_id, [parse_transfer(t) for t in transfers]
        )
        for result in results:
            if result["replayed"]:
                self.stats.replays += 1
            elif result["success"]:
                self.stats.transfers_committed += 1
            else:
                self.stats.transfers_failed += 1
        return JsonResponse({"results": results})

    async def balances(self, request: Request) -> Response:
        caller = self._caller(request)
        limit_text = request.query_params.get("limit")
        try:
            limit = DEFAULT_PAGE_SIZE if limit_text is None else int(limit_text)
        except ValueError:
            raise ApiError(400, "invalid_request", "limit must be an integer") from None
        if limit < 1:
            raise ApiError(400, "invalid_request", "limit must be >= 1")
        limit = min(limit, MAX_PAGE_SIZE)
        cursor = request.query_params.get("cursor") or None
        return JsonResponse(self.ledger.balances(caller, limit, cursor))

    async def transactions(self, request: Request) -> Response:
        caller = self._caller(request)
        key = request.query_params.get("idempotency_key")
        if not key:
            raise ApiError(400, "invalid_request", "idempotency_key is required")
        return JsonResponse({"transactions": self.ledger.transactions(caller.agent_id, key)})

    # -- escrow -----------------------------------------------------------------------------

    async def create_escrow(self, request: Request) -> Response:
        caller = self._caller(request, treasury=True)
        body = await _json_body(request)
        key = body.get("idempotency_key")
        header_key = request.headers.get("idempotency-key")
        if key is not None and not (isinstance(key, str) and key):
            raise ApiError(400, "invalid_request", "idempotency_key must be a non-empty string")
        if key is not None and header_key is not None and key != header_key:
            raise ApiError(
                400, "invalid_request", "Idempotency-Key header and idempotency_key differ"
            )
        key = key or header_key or None

        spec = parse_escrow_spec(body)
        state, replayed = self.ledger.create_escrow(caller.agent_id, spec, key)
        if not replayed:
            self.stats.escrows_created += 1
        return JsonResponse({**state, "replayed": replayed})

    async def release_escrow(self, request: Request) -> Response:
        caller = self._caller(request, treasury=True)
        body = await _json_body(request)
        escrow_id = body.get("escrow_id")
        recipient = body.get("recipient_agent_id")
        memo = body.get("memo")
        if not isinstance(escrow_id, str) or not escrow_id:
            raise ApiError(400, "invalid_request", "escrow_id is required")
        if not isinstance(recipient, str) or not recipient:
            raise ApiError(400, "invalid_request", "recipient_agent_id is required")
        if memo is not None and not isinstance(memo, str):
            raise ApiError(400, "invalid_request", "memo must be a string")

        result = self.ledger.release_escrow(caller.agent_id, escrow_id, recipient, memo)
        if result["replayed"]:
            self.stats.replays += 1
        else:
            self.stats.escrow_releases += 1
        return JsonResponse(result)

    async def get_escrow(self, request: Request) -> Response:
        caller = self._caller(request)
        return JsonResponse(self.ledger.get_escrow(request.path_params["escrow_id"], caller))

    # -- admin ------------------------------------------------------------------------------

    async def register_agents(self, request: Request) -> Response:
        self._caller(request, treasury=True)
        body = await _json_body(request)
        agent_ids = body.get("agent_ids")
        if not isinstance(agent_ids, list):
            raise ApiError(400, "invalid_request", "agent_ids must be a list")
        keys = self.ledger.register_agents(agent_ids)
        payload: dict[str, Any] = {"created": len(keys)}
        # A benchmark registering a million agents may not want a million keys back.
        if body.get("return_keys", True):
            payload["keys"] = keys
        return JsonResponse(payload)

    async def fund(self, request: Request) -> Response:
        self._caller(request, treasury=True)
        body = await _json_body(request)
        agent_id = body.get("agent_id")
        if not isinstance(agent_id, str) or not agent_id:
            raise ApiError(400, "invalid_request", "agent_id is required")
        return JsonResponse(self.ledger.fund(agent_id, parse_amount(body.get("amount_usdc"))))

    async def set_balances(self, request: Request) -> Response:
        self._caller(request, treasury=True)
        body = await _json_body(request)
        agent_id = body.get("agent_id")
        if not isinstance(agent_id, str) or not agent_id:
            raise ApiError(400, "invalid_request", "agent_id is required")
        btc = parse_crypto_amount(body.get("btc"), "btc", BTC_PLACES)
        eth = parse_crypto_amount(body.get("eth"), "eth", ETH_PLACES)
        return JsonResponse(self.ledger.set_crypto_balances(agent_id, btc, eth))

    async def get_faults(self, request: Request) -> Response:
        self._caller(request, treasury=True)
        return JsonResponse(self.faults.knobs.to_dict())

    async def set_faults(self, request: Request) -> Response:
        self._caller(request, treasury=True)
        body = await _json_body(request)
        try:
            knobs = self.faults.update(body)
        except InvalidKnobError as exc:
            raise ApiError(400, "invalid_request", str(exc)) from None
        return JsonResponse(knobs.to_dict())

    async def clock(self, request: Request) -> Response:
        self._caller(request, treasury=True)
        clock = self.ledger.clock
        if request.method == "POST":
            body = await _json_body(request)
            seconds = body.get("advance_seconds")
            if (
                isinstance(seconds, bool)
                or not isinstance(seconds, int | Decimal)
                or not 0 <= seconds <= MAX_CLOCK_ADVANCE_SECONDS
            ):
                raise ApiError(
                    400,
                    "invalid_request",
                    f"advance_seconds must be a number in [0, {MAX_CLOCK_ADVANCE_SECONDS}]",
                )
            clock.advance(float(seconds))
        return JsonResponse({"now": iso_utc(clock.now()), "offset_seconds": clock.offset_seconds})

    async def get_stats(self, request: Request) -> Response:
        self._caller(request, treasury=True)
        return JsonResponse(self.stats.to_dict())

    async def audit(self, request: Request) -> Response:
        self._caller(request, treasury=True)
        return JsonResponse(self.ledger.audit())

    async def sweep(self, request: Request) -> Response:
        self._caller(request, treasury=True)
        return JsonResponse({"refunded": self.ledger.sweep_expired()})

    # -- helpers ----------------------------------------------------------------------------

    def _caller(self, request: Request, *, treasury: bool = False) -> Caller:
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            raise ApiError(401, "unauthorized", "missing API key: send Authorization: Bearer <key>")
        caller = self.ledger.authenticate(key)
        if caller is None:
            raise ApiError(401, "unauthorized", "unknown API key")
        if treasury and caller.role != TREASURY:
            raise ApiError(403, "forbidden", "this endpoint needs the treasury key")
        return caller


async def _json_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    try:
        body = wire.decode(raw)
    except wire.DecodeError:
        raise ApiError(400, "invalid_request", "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_request", "the body must be a JSON object")
    return body


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return JsonResponse(error_body(exc.code, exc.message, **exc.details), status_code=exc.status)


async def _ledger_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, LedgerError)
    status = _STATUS_OF_CODE.get(exc.code, 400)
    return JsonResponse(error_body(exc.code, exc.message, **exc.details), status_code=status)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "invalid_request")
    return JsonResponse(error_body(code, str(exc.detail)), status_code=exc.status_code)


def _json_messages(
    status: int, payload: Any, headers: dict[str, str] | None = None
) -> list[Message]:
    body = wire.encode(payload)
    raw_headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    raw_headers += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    return [
        {"type": "http.response.start", "status": status, "headers": raw_headers},
        {"type": "http.response.body", "body": body, "more_body": False},
    ]


class FaultMiddleware:
    """Stamps request ids, logs one line per request, counts, and injects faults.

    The inner app's response is buffered, so an "after commit" fault can replace or hold it
    once the ledger has committed, and an unexpected exception still ends in a JSON 500 that
    carries the request id.

    Args:
        app: the Starlette app.
        faults: decides the fault of each money request.
        stats: counters to update.
        sleep: coroutine that waits; swapped in tests.
    """

    def __init__(
        self,
        app: ASGIApp,
        faults: FaultInjector,
        stats: SandboxStats,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.app = app
        self.faults = faults
        self.stats = stats
        self.sleep = sleep

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        request_id = f"req_{secrets.token_hex(12)}"
        started = time.perf_counter()
        sent_status: list[int] = []

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message).append("X-Request-Id", request_id)
                sent_status.append(message["status"])
            await send(message)

        outcome = None
        try:
            outcome = await self._handle(scope, receive, send_with_id)
        finally:
            status = outcome or (str(sent_status[0]) if sent_status else "dropped")
            self.stats.requests += 1
            self.stats.by_status[status] += 1
            # Never the headers: the Authorization header carries an API key.
            logger.info(
                "method=%s path=%s status=%s duration_ms=%.1f request_id=%s",
                scope["method"],
                scope["path"],
                status,
                (time.perf_counter() - started) * 1000,
                request_id,
            )

    async def _handle(self, scope: Scope, receive: Receive, send: Send) -> str | None:
        """Serves one request; returns "dropped" when the response was cut off on purpose."""
        path: str = scope["path"]
        plan = self.faults.plan() if path.startswith(MONEY_PREFIXES) else FaultPlan()

        if plan.latency_seconds > 0:
            self.stats.faults["latency"] += 1
            await self.sleep(plan.latency_seconds)
        if plan.rejection is not None:
            rejection = plan.rejection
            self.stats.faults[rejection.kind] += 1
            headers = {"Retry-After": rejection.retry_after} if rejection.retry_after else None
            body = error_body(rejection.code, rejection.message)
            await _send_all(send, _json_messages(rejection.status, body, headers))
            return None

        messages = await self._run_buffered(scope, receive)

        if plan.after_commit is not None and scope["method"] == "POST":
            if plan.after_commit == "error":
                self.stats.faults["error_after_commit"] += 1
                body = error_body("injected_error", "service unavailable (injected after commit)")
                messages = _json_messages(503, body)
            elif plan.after_commit == "timeout":
                self.stats.faults["timeout_after_commit"] += 1
                if await self._client_left_within(receive, plan.hang_seconds):
                    # Sending nothing drops the response: uvicorn closes the connection silently.
                    return "dropped"
            elif plan.after_commit == "drop":
                self.stats.faults["drop_after_commit"] += 1
                # uvicorn closes the connection when an app returns with its response started
                # but not finished: the client gets a status line and then end of stream.
                await send(messages[0])
                return "dropped"
        await _send_all(send, messages)
        return None

    async def _run_buffered(self, scope: Scope, receive: Receive) -> list[Message]:
        messages: list[Message] = []

        async def capture(message: Message) -> None:
            messages.append(message)

        try:
            await self.app(scope, receive, capture)
        except Exception:
            logger.exception("unhandled error in %s %s", scope["method"], scope["path"])
            return _json_messages(500, error_body("internal_error", "internal server error"))
        return messages

    async def _client_left_within(self, receive: Receive, seconds: float) -> bool:
        async def disconnected() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass

        try:
            await asyncio.wait_for(disconnected(), timeout=seconds)
        except TimeoutError:
            return False
        return True


async def _send_all(send: Send, messages: list[Message]) -> None:
    for message in messages:
        await send(message)
