"""Shared fixtures: a real sandbox server on loopback and a project home in tmp_path."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
import simplejson

from pf_platform.sandbox.server import SandboxProcess


@dataclass
class Sandbox:
    """A running sandbox and the treasury key that operates it."""

    process: SandboxProcess

    @property
    def base_url(self) -> str:
        return self.process.base_url

    @property
    def key(self) -> str:
        return self.process.treasury_key

    def call(self, method: str, path: str, body: dict | None = None) -> dict:
        response = httpx.request(
            method,
            f"{self.base_url}{path}",
            content=None if body is None else simplejson.dumps(body, use_decimal=True),
            headers={"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"},
            timeout=30,
        )
        response.raise_for_status()
        return simplejson.loads(response.text, use_decimal=True)

    def register(self, agent_ids) -> None:
        self.call("POST", "/admin/agents", {"agent_ids": sorted(agent_ids)})

    def balances(self) -> dict[str, Decimal]:
        """Every agent's USDC balance, paging through the balances endpoint."""
        found: dict[str, Decimal] = {}
        cursor = None
        while True:
            query = "/wallet/balances?limit=1000" + (f"&cursor={cursor}" if cursor else "")
            page = self.call("GET", query)
            found.update({row["agent_id"]: Decimal(row["usdc"]) for row in page["agents"]})
            cursor = page["next_cursor"]
            if not cursor:
                return found

    def stats(self) -> dict:
        return self.call("GET", "/admin/stats")

    def audit(self) -> dict:
        return self.call("GET", "/admin/audit")


@pytest.fixture
def sandbox(tmp_path: Path):
    """A fresh sandbox server (its own SQLite ledger) on a free loopback port."""
    with SandboxProcess(tmp_path / "sandbox" / "ledger.db") as process:
        yield Sandbox(process)


@pytest.fixture
def project_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sandbox: Sandbox) -> Path:
    """PF_HOME in tmp_path, pointed at the sandbox fixture."""
    home = tmp_path / "home"
    monkeypatch.setenv("PF_HOME", str(home))
    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster"))
    monkeypatch.setenv("PF_API_BASE_URL", sandbox.base_url)
    monkeypatch.setenv("PF_API_KEY", sandbox.key)
    for name in ("PF_LAKE_ROOT", "PF_LANDING_ROOT", "PF_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    return home


@pytest.fixture(scope="session")
def spark():
    """One local Spark session for the test run, workers on this interpreter.

    ``local[2,4]`` retries a failed task up to 4 times, as a cluster does; plain ``local[N]``
    would fail the job at the first task failure. Dagster's LazyPySparkResource gets this same
    session from ``getOrCreate``.
    """
    from pyspark.sql import SparkSession

    from pf_platform.resources.spark import local_spark_config, pin_worker_python

    pin_worker_python()
    builder = SparkSession.builder
    for key, value in local_spark_config(master="local[2,4]").items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    yield session
    session.stop()
