"""Each fault knob, observed over real HTTP against the shared sandbox server.

Contract: a fault before commit leaves the ledger untouched; a fault after commit leaves the
transfer committed although the client never sees the answer; 429s carry ``Retry-After`` in the
requested form; ``/health`` and ``/admin`` are never faulted; the schedule follows the seed.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx
import pytest

from pf_platform_tests.sandbox.conftest import SandboxApi, assert_ledger_sound, decode, transfer


def test_error_before_commit_commits_nothing(api: SandboxApi, prefix: str) -> None:
    keys = api.register(f"{prefix}-a")
    api.set_faults(error_before_commit_rate=1)

    response = api.transfer(transfer(f"{prefix}-a", 1, f"{prefix}-k"))

    assert response.status_code == 503
    assert decode(response)["error"]["code"] == "injected_error"
    assert response.headers["x-request-id"].startswith("req_")
    assert api.as_key(None).get("/health").status_code == 200
    assert api.audit()["entries_sum_micros"] == 0  # /admin is not faulted
    api.set_faults(error_before_commit_rate=0)
    assert api.transactions(f"{prefix}-k") == []
    assert api.balance(keys[f"{prefix}-a"]) == 0


def test_error_after_commit_commits_then_answers_503(api: SandboxApi, prefix: str) -> None:
    keys = api.register(f"{prefix}-a")
    api.set_faults(error_after_commit_rate=1)
    item = transfer(f"{prefix}-a", 2, f"{prefix}-k")

    response = api.transfer(item)
    reads = api.get(f"/wallet/transactions?idempotency_key={prefix}-k")

    assert response.status_code == 503
    assert decode(response)["error"]["code"] == "injected_error"
    assert reads.status_code == 200  # a GET commits nothing, so after-commit faults skip it
    [committed] = decode(reads)["transactions"]
    api.set_faults(error_after_commit_rate=0)
    retry = decode(api.transfer(item))["results"][0]
    assert (retry["tx_id"], retry["replayed"]) == (committed["tx_id"], True)
    assert api.balance(keys[f"{prefix}-a"]) == 2


def test_timeout_after_commit_holds_the_response(api: SandboxApi, prefix: str) -> None:
    api.register(f"{prefix}-a")
    api.set_faults(timeout_after_commit_rate=1, hang_seconds=5)

    with pytest.raises(httpx.ReadTimeout):
        api.transfer(transfer(f"{prefix}-a", 1, f"{prefix}-k1"), timeout=0.3)
    assert len(api.transactions(f"{prefix}-k1")) == 1

    api.set_faults(hang_seconds=0.3)
    started = time.monotonic()
    held = api.transfer(transfer(f"{prefix}-a", 1, f"{prefix}-k2"))
    assert held.status_code == 200
    assert time.monotonic() - started >= 0.3
    assert api.stats()["faults"]["timeout_after_commit"] >= 2


def test_drop_after_commit_cuts_the_connection(api: SandboxApi, prefix: str) -> None:
    api.register(f"{prefix}-a")
    api.set_faults(drop_after_commit_rate=1)

    with pytest.raises(httpx.TransportError):
        api.transfer(transfer(f"{prefix}-a", 1, f"{prefix}-k"))

    assert len(api.transactions(f"{prefix}-k")) == 1
    assert api.stats()["faults"]["drop_after_commit"] >= 1


@pytest.mark.parametrize("form", ["seconds", "http-date"])
def test_storm_429_in_both_retry_after_forms(api: SandboxApi, form: str) -> None:
    before = api.stats()["responses_429"]
    knobs = api.set_faults(storm_429={"count": 2, "retry_after": 30, "form": form})
    assert knobs["storm_429"] == {"count": 2, "retry_after": 30, "form": form}

    answers = [api.get("/wallet/transactions?idempotency_key=storm") for _ in range(3)]

    assert [r.status_code for r in answers] == [429, 429, 200]
    assert decode(answers[0])["error"]["code"] == "rate_limited"
    header = answers[0].headers["retry-after"]
    if form == "seconds":
        assert header == "30"
    else:
        wait = (parsedate_to_datetime(header) - datetime.now(UTC)).total_seconds()
        assert 28 <= wait <= 31
    assert api.stats()["responses_429"] == before + 2
    assert api.ok("GET", "/admin/faults")["storm_429"]["count"] == 0


def test_rate_limit_answers_429_with_retry_after(api: SandboxApi) -> None:
    api.set_faults(rate_limit_rpm=6, burst=1)

    first = api.get("/wallet/transactions?idempotency_key=rl")
    second = api.get("/wallet/transactions?idempotency_key=rl")
    health = api.as_key(None).get("/health")

    assert (first.status_code, second.status_code, health.status_code) == (200, 429, 200)
    assert second.headers["retry-after"] == "10"
    assert decode(second)["error"]["code"] == "rate_limited"
    assert api.stats()["faults"]["rate_limited"] >= 1


def test_latency_is_added_to_money_requests(api: SandboxApi) -> None:
    api.set_faults(latency_ms=200)

    started = time.monotonic()
    response = api.get("/wallet/transactions?idempotency_key=slow")
    elapsed = time.monotonic() - started

    assert response.status_code == 200
    assert elapsed >= 0.2
    assert api.stats()["faults"]["latency"] >= 1


def test_seed_makes_the_fault_schedule_repeatable(api: SandboxApi) -> None:
    def schedule() -> list[int]:
        return [api.get("/wallet/transactions?idempotency_key=s").status_code for _ in range(20)]

    api.set_faults(seed=1234, error_before_commit_rate=0.5)
    first = schedule()
    api.set_faults(seed=1234)
    second = schedule()

    assert first == second
    assert set(first) == {200, 503}


def test_admin_faults_validation_and_partial_update(api: SandboxApi) -> None:
    knobs = api.set_faults(latency_ms=3)
    refused = api.post("/admin/faults", {"error_before_commit_rate": 2})
    unknown = api.post("/admin/faults", {"bogus": 1})

    assert knobs["latency_ms"] == 3 and knobs["error_before_commit_rate"] == 0
    assert (refused.status_code, unknown.status_code) == (400, 400)
    assert api.ok("GET", "/admin/faults")["latency_ms"] == 3
    stats = api.stats()
    assert stats["requests"] > 0 and stats["by_status"]["200"] > 0
    assert stats["faults"]["error_before_commit"] >= 1
    assert_ledger_sound(api.audit())
