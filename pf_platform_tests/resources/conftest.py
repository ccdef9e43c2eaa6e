"""A sandbox payments server shared by the payments client tests, with faults reset per test."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from pf_platform.sandbox.server import SandboxProcess

# Every knob off: what each test starts from, whatever the previous test switched on.
QUIET_FAULTS: dict[str, Any] = {
    "latency_ms": 0,
    "error_before_commit_rate": 0,
    "error_after_commit_rate": 0,
    "timeout_after_commit_rate": 0,
    "drop_after_commit_rate": 0,
    "hang_seconds": 30,
    "storm_429": {"count": 0},
    "rate_limit_rpm": None,
    "burst": None,
}


@dataclass
class Sandbox:
    """A running sandbox plus the admin calls the tests need."""

    process: SandboxProcess

    @property
    def base_url(self) -> str:
        return self.process.base_url

    @property
    def key(self) -> str:
        return self.process.treasury_key

    def admin(self, method: str, path: str, body: Any = None) -> Any:
        """Calls an admin endpoint synchronously and returns its JSON body."""
        response = httpx.request(
            method,
            f"{self.base_url}{path}",
            json=body,
            headers={"Authorization": f"Bearer {self.key}"},
            trust_env=False,
        )
        response.raise_for_status()
        return response.json()

    async def admin_async(self, path: str, body: Any) -> Any:
        """Calls an admin POST endpoint from inside a running event loop."""
        async with httpx.AsyncClient(trust_env=False) as client:
            response = await client.post(
                f"{self.base_url}{path}",
                json=body,
                headers={"Authorization": f"Bearer {self.key}"},
            )
        response.raise_for_status()
        return response.json()

    def set_faults(self, **knobs: Any) -> None:
        self.admin("POST", "/admin/faults", knobs)

    def stats(self) -> dict[str, Any]:
        return self.admin("GET", "/admin/stats")

    def register(self, agent_ids: list[str]) -> dict[str, str]:
        """Registers agents; returns the API keys of the new ones."""
        return self.admin("POST", "/admin/agents", {"agent_ids": agent_ids})["keys"]


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """One sandbox process for the module; a failed start fails fast with the server's stderr."""
    folder = tmp_path_factory.mktemp("payments_sandbox")
    with SandboxProcess(folder / "ledger.db", startup_timeout=20) as process:
        yield Sandbox(process)


@pytest.fixture(autouse=True)
def _quiet_faults(request: pytest.FixtureRequest) -> None:
    if "sandbox" in request.fixturenames:
        request.getfixturevalue("sandbox").set_faults(**QUIET_FAULTS)
