"""Fixtures for the wallet snapshot tests: one sandbox for the folder, a fresh lake per test.

Starting a sandbox takes a second or more, so the tests of this folder share one. Each test
names its agents with its own prefix and syncs into its own lake, so a first sync inserts every
agent the sandbox holds (other tests' agents too); counts are asserted against ``agent_count``
taken from the API, never against a constant that depends on test order.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
import simplejson

from pf_platform.resources.payments.client import PurpleFleaClient
from pf_platform.sandbox.server import SandboxProcess
from pf_platform.wallets.sync import SyncReport, sync_from_api
from pf_platform.wallets.table import wallets_uri
from pf_platform_tests.conftest import Sandbox

_prefixes = itertools.count()


class Wallets:
    """The shared sandbox, this test's agent prefix and the wallets table it syncs into."""

    def __init__(self, sandbox: Sandbox, http: httpx.Client, uri: str, prefix: str) -> None:
        self.sandbox = sandbox
        self.uri = uri
        self.prefix = prefix
        self._http = http
        self._keys = itertools.count()

    def call(self, method: str, path: str, body: dict | None = None) -> dict:
        """A treasury call over the folder's pooled connection."""
        content = None if body is None else simplejson.dumps(body, use_decimal=True)
        response = self._http.request(method, path, content=content)
        response.raise_for_status()
        return simplejson.loads(response.text, use_decimal=True)

    def agent(self, name: str | int) -> str:
        """This test's agent id for ``name``."""
        return f"{self.prefix}-{name:02d}" if isinstance(name, int) else f"{self.prefix}-{name}"

    def register(self, *agent_ids: str) -> None:
        self.call("POST", "/admin/agents", {"agent_ids": list(agent_ids)})

    def all_listed(self) -> dict[str, dict]:
        """Every agent's row as the balances endpoint lists it, by agent id."""
        rows: dict[str, dict] = {}
        cursor = None
        while True:
            query = "/wallet/balances?limit=1000" + (f"&cursor={cursor}" if cursor else "")
            page = self.call("GET", query)
            rows.update({row["agent_id"]: row for row in page["agents"]})
            cursor = page["next_cursor"]
            if not cursor:
                return rows

    def agent_count(self) -> int:
        """How many agents the balances endpoint lists right now."""
        return len(self.all_listed())

    def listed(self, agent_id: str) -> dict:
        """One agent's row as the balances endpoint lists it."""
        return self.all_listed()[agent_id]

    def pay(self, agent_id: str, amount: str) -> str:
        """Pays ``amount`` USDC from the treasury; returns the transaction id."""
        body = {
            "transfers": [
                {
                    "recipient_agent_id": agent_id,
                    "amount_usdc": Decimal(amount),
                    "memo": "wallet test",
                    "idempotency_key": f"{self.prefix}-pay-{next(self._keys)}",
                }
            ]
        }
        [result] = self.call("POST", "/wallet/batch-transfer", body)["results"]
        assert result["success"], result
        return result["tx_id"]

    def fund(self, agent_id: str, amount: str) -> None:
        """Mints ``amount`` USDC straight into an agent (beyond what the treasury holds)."""
        self.call("POST", "/admin/fund", {"agent_id": agent_id, "amount_usdc": Decimal(amount)})

    def set_crypto(self, agent_id: str, btc: str | None = None, eth: str | None = None) -> dict:
        body: dict = {"agent_id": agent_id}
        if btc is not None:
            body["btc"] = Decimal(btc)
        if eth is not None:
            body["eth"] = Decimal(eth)
        return self.call("POST", "/admin/balances", body)

    def sync(self, **options) -> SyncReport:
        """One full sync through the real client, as the asset runs it."""

        async def run() -> SyncReport:
            async with PurpleFleaClient(self.sandbox.base_url, self.sandbox.key) as client:
                return await sync_from_api(client, self.uri, **options)

        return asyncio.run(run())


@pytest.fixture(scope="package")
def shared_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """One sandbox server for every test of this folder."""
    folder = tmp_path_factory.mktemp("wallets-sandbox")
    with SandboxProcess(folder / "ledger.db") as process:
        yield Sandbox(process)


@pytest.fixture(scope="package")
def treasury_http(shared_sandbox: Sandbox) -> Iterator[httpx.Client]:
    """One pooled connection to the shared sandbox, with the treasury key."""
    headers = {"Authorization": f"Bearer {shared_sandbox.key}", "Content-Type": "application/json"}
    with httpx.Client(base_url=shared_sandbox.base_url, headers=headers, timeout=30) as client:
        yield client


@pytest.fixture
def wallets(shared_sandbox: Sandbox, treasury_http: httpx.Client, tmp_path: Path) -> Wallets:
    """The shared sandbox, a fresh agent prefix and an empty lake in tmp_path."""
    uri = wallets_uri(str(tmp_path / "lake"))
    return Wallets(shared_sandbox, treasury_http, uri, f"w{next(_prefixes):03d}")
