"""Fixtures for the sandbox server tests: one shared server process and an HTTP helper.

The shared server lives for the whole session, so each test registers agents under its own
prefix and measures the treasury by difference. Fault knobs are reset after every test.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import simplejson

from pf_platform.sandbox.server import SandboxProcess

DEFAULT_KNOBS: dict[str, Any] = {
    "latency_ms": 0,
    "error_before_commit_rate": 0,
    "error_after_commit_rate": 0,
    "timeout_after_commit_rate": 0,
    "drop_after_commit_rate": 0,
    "hang_seconds": 30,
    "storm_429": None,
    "rate_limit_rpm": None,
    "burst": None,
    "seed": None,
}


class SandboxApi:
    """Talks to a sandbox over HTTP with httpx, bodies in and out through simplejson.

    Args:
        base_url: the server.
        key: the API key sent as the bearer token; None sends no Authorization header.
    """

    def __init__(self, base_url: str, key: str | None) -> None:
        self.base_url = base_url
        self.key = key
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.client = httpx.Client(base_url=base_url, headers=headers, timeout=10, trust_env=False)

    def close(self) -> None:
        self.client.close()

    def request(self, method: str, path: str, body: Any = None, **kwargs: Any) -> httpx.Response:
        if body is not None:
            kwargs["content"] = simplejson.dumps(body, use_decimal=True)
            kwargs.setdefault("headers", {})["Content-Type"] = "application/json"
        return self.client.request(method, path, **kwargs)

    def post(self, path: str, body: Any = None, **kwargs: Any) -> httpx.Response:
        return self.request("POST", path, body, **kwargs)

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", path, **kwargs)

    def ok(self, method: str, path: str, body: Any = None) -> Any:
        """The decoded body of a call that must answer 200."""
        response = self.request(method, path, body)
        assert response.status_code == 200, response.text
        return decode(response)

    def as_key(self, key: str | None) -> SandboxApi:
        """Another helper on the same server with a different key."""
        return SandboxApi(self.base_url, key)

    def register(self, *agent_ids: str) -> dict[str, str]:
        return self.ok("POST", "/admin/agents", {"agent_ids": list(agent_ids)})["keys"]

    def fund(self, agent_id: str, amount: Decimal | int) -> None:
        self.ok("POST", "/admin/fund", {"agent_id": agent_id, "amount_usdc": amount})

    def transfer(self, *items: dict[str, Any], **kwargs: Any) -> httpx.Response:
        return self.post("/wallet/batch-transfer", {"transfers": list(items)}, **kwargs)

    def balance(self, agent_key: str) -> Decimal:
        """An agent's USDC balance, read with its own key (which sees only its own row)."""
        rows = self.as_key(agent_key).ok("GET", "/wallet/balances")["agents"]
        assert len(rows) == 1
        return rows[0]["usdc"]

    def treasury(self) -> Decimal:
        return self.audit()["treasury_usdc"]

    def transactions(self, key: str) -> list[dict[str, Any]]:
        return self.ok("GET", f"/wallet/transactions?idempotency_key={key}")["transactions"]

    def set_faults(self, **knobs: Any) -> dict[str, Any]:
        return self.ok("POST", "/admin/faults", knobs)

    def stats(self) -> dict[str, Any]:
        return self.ok("GET", "/admin/stats")

    def audit(self) -> dict[str, Any]:
        return self.ok("GET", "/admin/audit")


def decode(response: httpx.Response) -> Any:
    """A response body with every number read as an exact Decimal or int."""
    return simplejson.loads(response.content, use_decimal=True)


def transfer(recipient: str, amount: Any, key: str | None, memo: str = "test") -> dict[str, Any]:
    """One item of a batch transfer."""
    return {
        "recipient_agent_id": recipient,
        "amount_usdc": amount,
        "memo": memo,
        "idempotency_key": key,
    }


def assert_ledger_sound(audit: dict[str, Any]) -> None:
    """The double-entry invariants the audit endpoint reports."""
    assert audit["entries_sum_micros"] == 0
    assert audit["unbalanced_transactions"] == 0
    assert audit["accounts_consistent"] is True
    assert audit["escrow_consistent"] is True
    assert audit["negative_balances"] == 0


@pytest.fixture(scope="session")
def sandbox_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxProcess]:
    """One sandbox server for the session; its ledger must audit clean when the session ends."""
    db_path = tmp_path_factory.mktemp("sandbox") / "ledger.db"
    with SandboxProcess(db_path) as process:
        yield process
        with SandboxApi(process.base_url, process.treasury_key).client as client:
            audit = decode(client.get("/admin/audit"))
        assert_ledger_sound(audit)


@pytest.fixture
def api(sandbox_process: SandboxProcess) -> Iterator[SandboxApi]:
    """The treasury's helper on the shared server; fault knobs are reset afterwards."""
    helper = SandboxApi(sandbox_process.base_url, sandbox_process.treasury_key)
    yield helper
    helper.set_faults(**DEFAULT_KNOBS)
    helper.close()


@pytest.fixture
def prefix(request: pytest.FixtureRequest) -> str:
    """A prefix for agent ids and idempotency keys that no other test uses."""
    name = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")
    return f"{name}-{secrets.token_hex(3)}"


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """A ledger path for a test that starts its own server."""
    return tmp_path / "sandbox" / "ledger.db"
