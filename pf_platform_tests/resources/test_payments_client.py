"""The payments client against a real sandbox server over loopback HTTP.

Contract under test: amounts travel as exact decimal literals; transient failures (429 in both
Retry-After forms, 503 before or after commit, dropped connections, timeouts) are retried with
the same idempotency keys, so the server commits each transfer exactly once; permanent failures
are raised at once as typed errors; every request logs one INFO line; no key ever appears in a
log record or an error.
"""

from __future__ import annotations

import asyncio
import logging
import traceback
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import dagster as dg
import httpx
import pytest
import simplejson

from pf_platform.resources.payments import (
    APIConnectionError,
    APITimeoutError,
    AuthenticationError,
    BatchOutcome,
    IdempotencyConflictError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    PurpleFleaClient,
    PurpleFleaError,
    PurpleFleaResource,
    RateLimitError,
    ServerError,
    Transfer,
    send_batches,
)
from pf_platform.sandbox.server import free_port

if TYPE_CHECKING:
    from pf_platform_tests.resources.conftest import Sandbox

LOGGER = "pf_platform.payments"


class Sleeps:
    """Stands in for asyncio.sleep: records each backoff delay and does not wait.

    Args:
        on_sleep: awaited before each (skipped) wait with the number of waits so far; tests use
            it to switch a fault off once it has struck.
    """

    def __init__(self, on_sleep: Callable[[int], Awaitable[None]] | None = None) -> None:
        self.delays: list[float] = []
        self.on_sleep = on_sleep

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        if self.on_sleep is not None:
            await self.on_sleep(len(self.delays))


class RecordingTransport(httpx.AsyncHTTPTransport):
    """The real network transport, keeping each request and the peak number in flight."""

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[httpx.Request] = []
        self.in_flight = 0
        self.max_in_flight = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await super().handle_async_request(request)
        finally:
            self.in_flight -= 1


def make_client(sandbox: Sandbox, sleeps: Sleeps | None = None, **options: Any) -> PurpleFleaClient:
    settings: dict[str, Any] = {
        "max_attempts": 5,
        "backoff_initial_s": 0.01,
        "backoff_max_s": 0.05,
        "read_timeout_s": 5.0,
        "jitter": lambda delay: delay,
        "sleep": sleeps or Sleeps(),
    }
    settings.update(options)
    api_key = settings.pop("api_key", sandbox.key)
    return PurpleFleaClient(sandbox.base_url, api_key, **settings)


def run(coro_fn: Callable[[PurpleFleaClient], Awaitable[Any]], client: PurpleFleaClient) -> Any:
    async def main() -> Any:
        async with client:
            return await coro_fn(client)

    return asyncio.run(main())


def switch_off(sandbox: Sandbox, knob: str) -> Callable[[int], Awaitable[None]]:
    """An ``on_sleep`` hook that turns ``knob`` off at the first backoff."""

    async def hook(count: int) -> None:
        if count == 1:
            await sandbox.admin_async("/admin/faults", {knob: 0})

    return hook


def delta(before: dict[str, Any], after: dict[str, Any], name: str) -> int:
    return after[name] - before[name]


def payment_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.INFO]


def error_text(error: BaseException) -> str:
    """Everything a traceback of ``error`` would print, chained causes included."""
    return "".join(traceback.format_exception(error)) + repr(error)


@pytest.fixture
def agents(sandbox: Sandbox, request: pytest.FixtureRequest) -> list[str]:
    """Five agents that belong to the calling test alone, so balances start at zero."""
    ids = [f"{request.node.name[:40]}-{n}" for n in range(5)]
    sandbox.register(ids)
    return ids


def test_amounts_are_exact_literals_on_the_wire_and_in_the_ledger(sandbox, agents):
    transport = RecordingTransport()
    transfers = [
        Transfer(agents[0], Decimal("0.002"), "tiny", "wire-0"),
        Transfer(agents[1], Decimal("1234.567891"), "odd", "wire-1"),
        Transfer(agents[2], Decimal(100), "round", "wire-2"),
    ]

    async def scenario(client: PurpleFleaClient):
        results = await client.batch_transfer(transfers)
        records = await client.get_transactions("wire-0")
        balances, _ = await client.list_balances()
        return results, records, balances

    results, records, balances = run(scenario, make_client(sandbox, transport=transport))

    body = transport.requests[0].content
    assert b'"amount_usdc":0.002,' in body
    assert b'"amount_usdc":1234.567891,' in body
    assert b'"amount_usdc":100,' in body
    assert b'"0.002"' not in body and b"0.0020000" not in body
    sent = simplejson.loads(body, use_decimal=True)["transfers"]
    assert [t["amount_usdc"] for t in sent] == [Decimal("0.002"), Decimal("1234.567891"), 100]

    assert [(r.success, r.replayed, r.amount_usdc) for r in results] == [
        (True, False, Decimal("0.002")),
        (True, False, Decimal("1234.567891")),
        (True, False, Decimal(100)),
    ]
    assert [(t.tx_id, t.amount_usdc) for t in records] == [(results[0].tx_id, Decimal("0.002"))]
    paid = {b.agent_id: b.usdc for b in balances if b.agent_id in agents}
    assert paid[agents[0]] == Decimal("0.002")
    assert paid[agents[1]] == Decimal("1234.567891")
    assert paid[agents[3]] == 0


def test_per_item_failures_are_results_not_exceptions(sandbox, agents):
    transfers = [
        Transfer(agents[0], Decimal(1), "ok", "items-0"),
        Transfer("nobody-registered-this", Decimal(1), "who", "items-1"),
        Transfer(agents[1], Decimal(10_000_000), "too much", "items-2"),
    ]

    results = run(lambda c: c.batch_transfer(transfers), make_client(sandbox))

    assert [(r.success, r.error) for r in results] == [
        (True, None),
        (False, "unknown_agent"),
        (False, "insufficient_funds"),
    ]


@pytest.mark.parametrize("form", ["seconds", "http-date"])
def test_a_429_storm_is_waited_out_and_pays_once(sandbox, agents, caplog, form):
    sandbox.set_faults(storm_429={"count": 3, "retry_after": 5, "form": form})
    sleeps = Sleeps()
    key = f"storm-{form}"
    before = sandbox.stats()

    with caplog.at_level(logging.DEBUG):
        results = run(
            lambda c: c.batch_transfer([Transfer(agents[0], Decimal("2.5"), "storm", key)]),
            make_client(sandbox, sleeps),
        )

    after = sandbox.stats()
    assert (results[0].success, results[0].replayed) == (True, False)
    assert delta(before, after, "responses_429") == 3
    assert delta(before, after, "transfers_committed") == 1
    assert delta(before, after, "replays") == 0
    # Backoff here is 10-40 ms, so every wait was set by Retry-After: exactly 5 s in seconds
    # form, and 4-5 s in date form, whose one-second resolution truncates part of a second.
    assert len(sleeps.delays) == 3
    if form == "seconds":
        assert sleeps.delays == [5.0, 5.0, 5.0]
    else:
        assert all(3.0 <= d <= 5.0 for d in sleeps.delays), sleeps.delays

    lines = payment_lines(caplog)
    assert len(lines) == 4
    for attempt, (line, status) in enumerate(zip(lines, [429, 429, 429, 200]), start=1):
        text = line.getMessage()
        assert text.startswith("method=POST path=/wallet/batch-transfer ")
        assert f"status={status} " in text and "request_id=req_" in text
        assert f"items=1 idempotency_key={key} attempt={attempt} duration_ms=" in text
    assert sandbox.key not in caplog.text
    assert all(sandbox.key not in str(r.args) for r in caplog.records)


def test_retry_after_is_capped_by_the_client_maximum(sandbox, agents):
    sandbox.set_faults(storm_429={"count": 1, "retry_after": 3600, "form": "seconds"})
    sleeps = Sleeps()

    results = run(
        lambda c: c.batch_transfer([Transfer(agents[0], Decimal(1), "m", "capped-wait")]),
        make_client(sandbox, sleeps, retry_after_max_s=0.5),
    )

    assert results[0].success
    assert sleeps.delays == [0.5]


def test_a_storm_longer_than_the_attempts_raises_rate_limit_error(sandbox, agents):
    sandbox.set_faults(storm_429={"count": 10, "retry_after": 1, "form": "seconds"})
    before = sandbox.stats()

    with pytest.raises(RateLimitError) as info:
        run(
            lambda c: c.batch_transfer([Transfer(agents[0], Decimal(1), "m", "long-storm")]),
            make_client(sandbox, max_attempts=3),
        )

    error = info.value
    assert (error.attempts, error.retry_after, error.code) == (3, 1.0, "rate_limited")
    assert str(error).startswith(error.request_id) and error.request_id.startswith("req_")
    assert delta(before, sandbox.stats(), "transfers_committed") == 0


def test_error_before_commit_is_retried_and_pays_once(sandbox, agents):
    sandbox.set_faults(error_before_commit_rate=1)
    sleeps = Sleeps(switch_off(sandbox, "error_before_commit_rate"))
    before = sandbox.stats()

    results = run(
        lambda c: c.batch_transfer([Transfer(agents[0], Decimal(3), "m", "before-commit")]),
        make_client(sandbox, sleeps),
    )

    after = sandbox.stats()
    assert (results[0].success, results[0].replayed) == (True, False)
    assert len(sleeps.delays) == 1
    assert delta(before, after, "transfers_committed") == 1
    assert (
        after["faults"]["error_before_commit"] - before["faults"].get("error_before_commit", 0) == 1
    )


@pytest.mark.parametrize(
    ("knob", "first_failure"),
    [("error_after_commit_rate", "injected_error"), ("drop_after_commit_rate", "dropped")],
)
def test_a_lost_answer_after_commit_is_replayed_not_paid_twice(
    sandbox, agents, caplog, knob, first_failure
):
    sandbox.set_faults(**{knob: 1})
    key = f"after-commit-{knob}"
    before = sandbox.stats()

    async def scenario(client: PurpleFleaClient):
        results = await client.batch_transfer([Transfer(agents[0], Decimal(4), "m", key)])
        return results, await client.get_transactions(key)

    with caplog.at_level(logging.INFO, logger=LOGGER):
        results, records = run(scenario, make_client(sandbox, Sleeps(switch_off(sandbox, knob))))

    after = sandbox.stats()
    assert (results[0].success, results[0].replayed) == (True, True)
    assert [r.tx_id for r in records] == [results[0].tx_id]
    assert delta(before, after, "transfers_committed") == 1
    assert delta(before, after, "replays") == 1
    first = payment_lines(caplog)[0].getMessage()
    if first_failure == "dropped":
        # The status line arrived but the body never did, so there is no response to report.
        assert "status=- request_id=-" in first and "error=APIConnectionError" in first
    else:
        assert "status=503" in first and "error=injected_error" in first


def test_timeouts_raise_after_the_last_attempt_and_leave_a_reconcilable_trail(sandbox, agents):
    sandbox.set_faults(timeout_after_commit_rate=1, hang_seconds=5)
    key = "timeout-0"
    before = sandbox.stats()

    with pytest.raises(APITimeoutError) as info:
        run(
            lambda c: c.batch_transfer([Transfer(agents[0], Decimal(5), "m", key)]),
            make_client(sandbox, read_timeout_s=0.3, max_attempts=2),
        )

    sandbox.set_faults(timeout_after_commit_rate=0)
    records = run(lambda c: c.get_transactions(key), make_client(sandbox))
    assert info.value.attempts == 2
    assert info.value.idempotency_key == key and info.value.http_status is None
    assert info.value.should_retry
    # The first attempt committed before the answer was held back; the second was a replay.
    assert len(records) == 1 and records[0].amount_usdc == Decimal(5)
    assert delta(before, sandbox.stats(), "transfers_committed") == 1


def test_server_errors_raise_server_error_after_the_last_attempt(sandbox, agents):
    sandbox.set_faults(error_before_commit_rate=1)
    sleeps = Sleeps()

    with pytest.raises(ServerError) as info:
        run(
            lambda c: c.batch_transfer([Transfer(agents[0], Decimal(1), "m", "always-503")]),
            make_client(sandbox, sleeps, max_attempts=3, backoff_initial_s=0.01),
        )

    assert (info.value.attempts, info.value.http_status, info.value.code) == (
        3,
        503,
        "injected_error",
    )
    # Capped exponential backoff: 10 ms, then 20 ms.
    assert sleeps.delays == pytest.approx([0.01, 0.02])


def test_escrow_create_without_a_key_is_sent_once(sandbox, agents):
    sandbox.set_faults(error_before_commit_rate=1)
    transport = RecordingTransport()

    with pytest.raises(ServerError) as info:
        run(
            lambda c: c.create_escrow(Decimal(5), [agents[0]], "f1 > 0.9", 60, "bounty"),
            make_client(sandbox, transport=transport),
        )

    # Without a key the server could lock the money twice, so a 503 is not retried.
    assert info.value.attempts == 1 and len(transport.requests) == 1
    assert "idempotency-key" not in transport.requests[0].headers


def test_connection_refused_is_retried_then_raised_without_the_key():
    closed = f"http://127.0.0.1:{free_port()}"
    key = "pf_test_connectionRefusedKey0123456789"
    sleeps = Sleeps()

    async def scenario() -> None:
        async with PurpleFleaClient(
            closed, key, max_attempts=3, jitter=lambda d: d, sleep=sleeps, backoff_initial_s=0.01
        ) as client:
            await client.list_balances()

    with pytest.raises(APIConnectionError) as info:
        asyncio.run(scenario())

    assert type(info.value) is APIConnectionError
    assert (info.value.attempts, info.value.request_id, len(sleeps.delays)) == (3, None, 2)
    assert key not in error_text(info.value)


def test_an_idempotency_conflict_is_raised_at_once(sandbox, agents, caplog):
    key = "conflict-0"
    run(
        lambda c: c.batch_transfer([Transfer(agents[0], Decimal(1), "m", key)]),
        make_client(sandbox),
    )
    before = sandbox.stats()

    with (
        caplog.at_level(logging.INFO, logger=LOGGER),
        pytest.raises(IdempotencyConflictError) as info,
    ):
        run(
            lambda c: c.batch_transfer([Transfer(agents[0], Decimal(2), "m", key)]),
            make_client(sandbox),
        )

    assert (info.value.keys, info.value.attempts, info.value.http_status) == ([key], 1, 409)
    assert len(payment_lines(caplog)) == 1
    assert sandbox.stats()["by_status"].get("409", 0) - before["by_status"].get("409", 0) == 1


def test_invalid_requests_are_not_retried_even_when_safe_to_resend(sandbox, agents, caplog):
    async def bad_escrow(client: PurpleFleaClient):
        await client.create_escrow(
            Decimal(10), [agents[0]], "never", 60, "m", winners=2, idempotency_key="bad-escrow"
        )

    async def bad_cursor(client: PurpleFleaClient):
        await client.list_balances(cursor="not-a-cursor")

    with caplog.at_level(logging.INFO, logger=LOGGER):
        for scenario in (bad_escrow, bad_cursor):
            with pytest.raises(InvalidRequestError) as info:
                run(scenario, make_client(sandbox))
            assert (info.value.http_status, info.value.code) == (400, "invalid_request")
            assert info.value.attempts == 1

    assert len(payment_lines(caplog)) == 2


def test_wrong_key_and_wrong_role_are_typed_and_never_echoed(sandbox, agents):
    wrong_key = "pf_test_thisKeyDoesNotExist0123456789"
    agent_key = sandbox.register([f"{agents[0]}-self"])[f"{agents[0]}-self"]

    with pytest.raises(AuthenticationError) as unauthorized:
        run(lambda c: c.list_balances(), make_client(sandbox, api_key=wrong_key))
    with pytest.raises(PermissionDeniedError) as forbidden:
        run(
            lambda c: c.batch_transfer([Transfer(agents[0], Decimal(1), "m", "as-agent")]),
            make_client(sandbox, api_key=agent_key),
        )

    assert (unauthorized.value.http_status, unauthorized.value.attempts) == (401, 1)
    assert forbidden.value.http_status == 403
    for error, key in ((unauthorized.value, wrong_key), (forbidden.value, agent_key)):
        assert key not in error_text(error)
        assert sandbox.key not in error_text(error)


def test_no_error_raised_in_a_faulty_run_contains_the_key(sandbox, agents):
    sandbox.set_faults(timeout_after_commit_rate=1, hang_seconds=5)
    with pytest.raises(APITimeoutError) as timeout:
        run(
            lambda c: c.batch_transfer([Transfer(agents[0], Decimal(1), "m", "leak-0")]),
            make_client(sandbox, read_timeout_s=0.2, max_attempts=1),
        )
    sandbox.set_faults(timeout_after_commit_rate=0, drop_after_commit_rate=1)
    with pytest.raises(APIConnectionError) as dropped:
        run(
            lambda c: c.batch_transfer([Transfer(agents[0], Decimal(1), "m", "leak-1")]),
            make_client(sandbox, max_attempts=1),
        )

    for error in (timeout.value, dropped.value):
        assert isinstance(error.__cause__, httpx.HTTPError)
        assert sandbox.key not in error_text(error)


def test_a_batch_over_the_limit_is_refused_before_sending(sandbox, agents, caplog):
    transfers = [Transfer(agents[0], Decimal(1), "m", f"big-{n}") for n in range(1001)]

    with caplog.at_level(logging.INFO, logger=LOGGER), pytest.raises(ValueError, match="1000"):
        run(lambda c: c.batch_transfer(transfers), make_client(sandbox))

    assert payment_lines(caplog) == []


def test_iter_balances_pages_through_more_than_a_thousand_agents(sandbox, caplog):
    bulk = [f"bulk-{n:05d}" for n in range(1205)]
    sandbox.admin("POST", "/admin/agents", {"agent_ids": bulk, "return_keys": False})

    async def collect(client: PurpleFleaClient) -> list[list[str]]:
        return [[b.agent_id for b in page] async for page in client.iter_balances(page_size=500)]

    with caplog.at_level(logging.INFO, logger=LOGGER):
        pages = run(collect, make_client(sandbox))

    seen = [agent for page in pages for agent in page]
    assert len(pages) >= 3 and all(len(page) <= 500 for page in pages)
    assert len(seen) == len(set(seen))
    assert set(bulk) <= set(seen)
    assert len(payment_lines(caplog)) == len(pages)

    full_pages = run(collect_default_pages, make_client(sandbox))
    assert [len(p) for p in full_pages][:1] == [1000] and sum(map(len, full_pages)) == len(seen)


async def collect_default_pages(client: PurpleFleaClient) -> list[list[str]]:
    return [[b.agent_id for b in page] async for page in client.iter_balances()]


def test_send_batches_runs_in_parallel_and_reports_each_batch(sandbox, agents):
    sandbox.set_faults(latency_ms=100)
    batches = [
        [Transfer(agents[n % 5], Decimal("0.5"), "m", f"fan-{b}-{n}") for n in range(3)]
        for b in range(6)
    ]
    # Same key as the batch before, different amount: this batch alone must fail.
    batches.append([Transfer(agents[0], Decimal(9), "m", "fan-0-0")])
    transport = RecordingTransport()
    seen: list[int] = []

    async def on_result(outcome: BatchOutcome) -> None:
        seen.append(outcome.index)

    async def scenario(client: PurpleFleaClient) -> list[BatchOutcome]:
        return await send_batches(client, iter(batches), concurrency=3, on_result=on_result)

    outcomes = run(scenario, make_client(sandbox, transport=transport))

    assert [o.index for o in outcomes] == list(range(7)) and sorted(seen) == list(range(7))
    assert transport.max_in_flight == 3
    assert all(o.error is None and len(o.results) == 3 for o in outcomes[:6])
    assert all(r.success for o in outcomes[:6] for r in o.results)
    assert isinstance(outcomes[6].error, IdempotencyConflictError) and outcomes[6].results is None
    assert outcomes[6].attempts == 1 and outcomes[0].duration_ms >= 100


def test_escrow_create_release_and_failures(sandbox, agents):
    sandbox.set_faults(error_after_commit_rate=1)
    transport = RecordingTransport()
    sleeps = Sleeps(switch_off(sandbox, "error_after_commit_rate"))
    before = sandbox.stats()
    condition = {"experiment": "exp", "metric": "f1", "threshold": Decimal("0.9")}

    async def scenario(client: PurpleFleaClient):
        escrow = await client.create_escrow(
            Decimal(10),
            agents[:2],
            condition,
            3600,
            "bounty",
            referrer_agent_id=agents[2],
            idempotency_key="escrow-0",
        )
        release = await client.release_escrow(escrow.escrow_id, agents[0], "won")
        again = await client.release_escrow(escrow.escrow_id, agents[0], "won")
        state = await client.get_escrow(escrow.escrow_id)
        return escrow, release, again, state

    escrow, release, again, state = run(scenario, make_client(sandbox, sleeps, transport=transport))

    # The create committed, lost its answer to the injected 503, and was replayed by key.
    assert escrow.replayed and escrow.status == "locked" and escrow.release_condition == condition
    assert delta(before, sandbox.stats(), "escrows_created") == 1
    assert transport.requests[0].headers["idempotency-key"] == "escrow-0"
    assert (release.amount_usdc, release.fee_usdc) == (Decimal("9.9"), Decimal("0.1"))
    assert (release.referrer_fee_usdc, release.platform_fee_usdc) == (
        Decimal("0.015"),
        Decimal("0.085"),
    )
    assert again.replayed and again.tx_id == release.tx_id
    assert state.status == "released" and state.remaining_usdc == 0

    async def failures(client: PurpleFleaClient) -> list[PurpleFleaError]:
        expiring = await client.create_escrow(Decimal(1), [agents[3]], "x", 60, "m")
        await sandbox.admin_async("/admin/clock", {"advance_seconds": 120})
        errors = []
        for call in (
            client.release_escrow(escrow.escrow_id, agents[4]),
            client.release_escrow(expiring.escrow_id, agents[3]),
            client.get_escrow("esc_missing"),
        ):
            try:
                await call
            except PurpleFleaError as exc:
                errors.append(exc)
        return errors

    not_eligible, expired, missing = run(failures, make_client(sandbox))
    assert (type(not_eligible), not_eligible.code) == (InvalidRequestError, "not_eligible")
    assert (expired.http_status, expired.code) == (410, "escrow_expired")
    assert isinstance(missing, NotFoundError)


def test_resource_builds_a_working_client_from_env_var(sandbox, monkeypatch):
    monkeypatch.setenv("PF_API_KEY", sandbox.key)
    seen: dict[str, Any] = {}

    @dg.asset
    def probe(purple_flea: PurpleFleaResource) -> None:
        async def main() -> None:
            async with purple_flea.get_client() as client:
                seen["health"] = await client.health()
                seen["balances"], _ = await client.list_balances(limit=1)

        asyncio.run(main())
        seen["repr"] = repr(purple_flea)

    resource = PurpleFleaResource(
        base_url=sandbox.base_url, api_key=dg.EnvVar("PF_API_KEY"), max_attempts=2
    )
    assert dg.materialize([probe], resources={"purple_flea": resource}).success

    assert seen["health"] == {"status": "ok"} and len(seen["balances"]) == 1
    assert sandbox.key not in seen["repr"] and "batch_size=1000" in seen["repr"]
    with pytest.raises(Exception, match="batch_size"):
        PurpleFleaResource(api_key="pf_test_x", batch_size=1001)
