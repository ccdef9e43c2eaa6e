"""Payments client behaviour that the sandbox server cannot be made to show.

Everything a real server can produce is tested against the sandbox in
``test_payments_client.py``; this file covers pure functions (Retry-After parsing, the error
mapping, wire formatting) and responses outside the contract, served by ``httpx.MockTransport``.
"""

from __future__ import annotations

import asyncio
import pickle
import subprocess
import sys
from datetime import UTC, datetime
from decimal import Decimal

import httpx
import pytest
import simplejson

from pf_platform import wire
from pf_platform.payouts.money import InvalidAmountError
from pf_platform.resources.payments import (
    AuthenticationError,
    EqualJitter,
    IdempotencyConflictError,
    InsufficientFundsError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    PurpleFleaClient,
    PurpleFleaError,
    RateLimitError,
    ServerError,
    Transfer,
    UnexpectedResponseError,
)
from pf_platform.resources.payments.errors import error_from_response, parse_retry_after
from pf_platform.resources.payments.models import wire_amount

KEY = "pf_test_unitSECRETkey0123456789"
NOW = datetime(2026, 10, 21, 7, 28, 0, tzinfo=UTC)


def _transfer(n: int = 0, amount: str = "0.002") -> Transfer:
    return Transfer(f"agent-{n}", Decimal(amount), "unit", f"unit-key-{n}")


def _client(handler, sleeps: list[float] | None = None, **kwargs) -> PurpleFleaClient:
    async def record(seconds: float) -> None:
        if sleeps is not None:
            sleeps.append(seconds)

    options = {"max_attempts": 3, "backoff_initial_s": 0.01, "backoff_max_s": 0.04}
    options.update(kwargs)
    return PurpleFleaClient(
        "http://payments.test",
        KEY,
        jitter=lambda d: d,
        sleep=record,
        transport=httpx.MockTransport(handler),
        **options,
    )


def _json(status: int, body: object, **headers: str) -> httpx.Response:
    return httpx.Response(
        status,
        content=simplejson.dumps(body, use_decimal=True).encode(),
        headers={"content-type": "application/json", "x-request-id": "req_unit", **headers},
    )


class TestRetryAfterParsing:
    def test_delta_seconds(self):
        assert parse_retry_after("7") == 7.0
        assert parse_retry_after(" 0 ") == 0.0

    def test_http_date_is_measured_from_now(self):
        assert parse_retry_after("Wed, 21 Oct 2026 07:28:05 GMT", now=NOW) == 5.0

    def test_obsolete_asctime_date_is_read_as_gmt(self):
        assert parse_retry_after("Wed Oct 21 07:28:09 2026", now=NOW) == 9.0

    def test_date_in_the_past_means_no_wait(self):
        assert parse_retry_after("Wed, 21 Oct 2026 07:27:00 GMT", now=NOW) == 0.0

    @pytest.mark.parametrize("value", [None, "", "soon", "nan", "inf", "Wed, 99 Foo 2026"])
    def test_unreadable_values_are_ignored(self, value):
        assert parse_retry_after(value, now=NOW) is None


class TestErrorMapping:
    @pytest.mark.parametrize(
        ("status", "code", "expected"),
        [
            (400, "invalid_amount", InvalidRequestError),
            (400, "insufficient_funds", InsufficientFundsError),
            (401, "unauthorized", AuthenticationError),
            (403, "forbidden", PermissionDeniedError),
            (404, "not_found", NotFoundError),
            (409, "idempotency_conflict", IdempotencyConflictError),
            (410, "escrow_expired", InvalidRequestError),
            (429, "rate_limited", RateLimitError),
            (502, None, ServerError),
            (503, "injected_error", ServerError),
        ],
    )
    def test_status_and_code_pick_the_class(self, status, code, expected):
        body = {"error": {"code": code, "message": "m"}} if code else {}
        error = error_from_response(_json(status, body), idempotency_key="k1")

        assert type(error) is expected
        assert (error.http_status, error.request_id, error.code) == (status, "req_unit", code)
        assert error.idempotency_key == "k1"
        assert str(error).startswith("req_unit")

    def test_conflict_carries_the_keys(self):
        body = {"error": {"code": "idempotency_conflict", "message": "m", "keys": ["a", "b"]}}
        error = error_from_response(_json(409, body))

        assert isinstance(error, IdempotencyConflictError)
        assert error.keys == ["a", "b"]

    def test_non_json_error_body_still_maps_by_status(self):
        response = httpx.Response(502, content=b"<html>Bad Gateway</html>")
        error = error_from_response(response)

        assert type(error) is ServerError
        assert error.code is None
        assert "502" in str(error)

    def test_errors_survive_pickling(self):
        error = error_from_response(
            _json(429, {"error": {"code": "rate_limited"}}, **{"retry-after": "3"})
        )
        clone = pickle.loads(pickle.dumps(error))

        assert type(clone) is RateLimitError
        assert (clone.retry_after, clone.request_id, str(clone)) == (3.0, "req_unit", str(error))


class TestWireFormat:
    def test_amounts_are_written_in_shortest_plain_form(self):
        assert str(wire_amount(Decimal("0.002000"))) == "0.002"
        assert str(wire_amount(Decimal("100.000000"))) == "100"
        assert str(wire_amount(Decimal("0.000001"))) == "0.000001"
        assert str(wire_amount(Decimal("1E+2"))) == "100"
        # More digits than the default context's 28: every one is kept, none is rounded.
        long = "123456789012345678901234567890.123456"
        assert str(wire_amount(Decimal(long + "000"))) == long

    def test_json_numbers_are_decimals_both_ways(self):
        body = wire.decode(b'{"a": 0.1, "b": 3, "c": 1e-7, "d": 12345678901234567890.123456}')
        assert body == {
            "a": Decimal("0.1"),
            "b": 3,
            "c": Decimal("1E-7"),
            "d": Decimal("12345678901234567890.123456"),
        }
        assert type(body["b"]) is int
        assert wire.encode({"amount_usdc": Decimal("0.1"), "n": 3}) == b'{"amount_usdc":0.1,"n":3}'

    @pytest.mark.parametrize("text", [b"NaN", b'{"a": Infinity}', b"{", b'"\xff"', b"\xff"])
    def test_what_is_not_json_is_refused(self, text):
        with pytest.raises(wire.DecodeError):
            wire.decode(text)

    @pytest.mark.parametrize("amount", ["NaN", "Infinity", "-Infinity"])
    def test_a_non_finite_amount_is_never_written(self, amount):
        with pytest.raises(ValueError, match="non-finite"):
            wire.encode({"amount_usdc": Decimal(amount)})

    @pytest.mark.parametrize("amount", [0.5, "0.0000001", "-1", "0", "NaN"])
    def test_transfer_refuses_inexact_or_non_positive_amounts(self, amount):
        with pytest.raises(InvalidAmountError):
            Transfer("agent-1", amount, "memo", "key-1")

    def test_transfer_needs_an_idempotency_key(self):
        with pytest.raises(ValueError, match="idempotency_key"):
            Transfer("agent-1", Decimal(1), "memo", " ")


class TestOutsideTheContract:
    def test_malformed_success_body_is_a_typed_error_and_not_retried(self):
        calls = []

        def handler(request: httpx.Request) -> httpx.Response:
            calls.append(request)
            return httpx.Response(200, content=b"{not json", headers={"x-request-id": "req_bad"})

        async def run():
            async with _client(handler) as client:
                await client.batch_transfer([_transfer()])

        with pytest.raises(UnexpectedResponseError) as info:
            asyncio.run(run())

        assert len(calls) == 1
        assert info.value.request_id == "req_bad"
        assert info.value.attempts == 1

    def test_result_count_mismatch_is_a_typed_error(self):
        def handler(request: httpx.Request) -> httpx.Response:
            return _json(200, {"results": []})

        async def run():
            async with _client(handler) as client:
                await client.batch_transfer([_transfer()])

        with pytest.raises(UnexpectedResponseError, match="expected 1 results"):
            asyncio.run(run())

    def test_usdc_beyond_six_places_in_a_response_is_refused(self):
        def handler(request: httpx.Request) -> httpx.Response:
            body = b'{"agents": [{"agent_id": "a", "usdc": 1.0000001, "btc": 0, "eth": 0}]}'
            return httpx.Response(200, content=body, headers={"x-request-id": "req_scale"})

        async def run():
            async with _client(handler) as client:
                return await client.list_balances()

        with pytest.raises(UnexpectedResponseError) as info:
            asyncio.run(run())

        assert info.value.request_id == "req_scale"

    def test_server_message_echoing_the_key_is_redacted(self):
        def handler(request: httpx.Request) -> httpx.Response:
            return _json(400, {"error": {"code": "invalid_request", "message": f"bad {KEY}"}})

        async def run():
            async with _client(handler) as client:
                await client.batch_transfer([_transfer()])

        with pytest.raises(InvalidRequestError) as info:
            asyncio.run(run())

        for text in (str(info.value), repr(info.value), info.value.message):
            assert KEY not in text
            assert "pf_***" in text


class TestConstruction:
    def test_live_key_is_never_sent_over_plain_http(self):
        with pytest.raises(ValueError, match="plain http"):
            PurpleFleaClient("http://api.example", "pf_live_abc")

    def test_repr_holds_no_key(self):
        client = PurpleFleaClient("http://payments.test", KEY)
        assert KEY not in repr(client)
        assert KEY not in repr(client._http.headers)

    def test_seeded_jitter_repeats_and_keeps_at_least_half(self):
        first, second = EqualJitter(seed=7), EqualJitter(seed=7)
        delays = [first(1.0) for _ in range(20)]

        assert delays == [second(1.0) for _ in range(20)]
        assert all(0.5 <= d <= 1.0 for d in delays)

    def test_client_imports_without_dagster(self):
        code = (
            "import sys, pf_platform.resources.payments.client, pf_platform.resources.payments;"
            "sys.exit('dagster' in sys.modules)"
        )
        assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_base_error_without_request_id_prints_the_message():
    assert str(PurpleFleaError("no answer")) == "no answer"
