"""Shared pieces of the fault-injection suite: an admin helper, the calm knobs, the figures.

Both parts of the suite add what they saw to one ``FaultFigures`` kept for the session, and the
session ends with a line that states it, printed in the terminal summary so that ``pytest -q``
shows it too.
"""

from __future__ import annotations

import ssl
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import httpx
import pytest
import simplejson

# One TLS context for every client of the suite: building one per client costs tens of
# milliseconds, hundreds of times over, and every URL here is plain http on loopback anyway.
TLS = ssl.create_default_context()

INJECTED_KINDS = (
    "error_before_commit",
    "error_after_commit",
    "timeout_after_commit",
    "drop_after_commit",
    "storm_429",
)

# Every knob that can make a request fail, switched off.
CALM_KNOBS: dict[str, Any] = {
    "latency_ms": 0,
    "error_before_commit_rate": 0,
    "error_after_commit_rate": 0,
    "timeout_after_commit_rate": 0,
    "drop_after_commit_rate": 0,
    "storm_429": None,
    "rate_limit_rpm": None,
    "seed": None,
}


class Admin:
    """The treasury's view of a sandbox: agents, fault knobs, stats and key lookups.

    Args:
        base_url: the sandbox.
        key: the treasury key.
    """

    def __init__(self, base_url: str, key: str) -> None:
        self.base_url = base_url
        self.key = key
        self.http = httpx.Client(
            base_url=base_url,
            headers={"Authorization": f"Bearer {key}"},
            timeout=30,
            trust_env=False,
            verify=TLS,
        )

    def close(self) -> None:
        self.http.close()

    def call(self, method: str, path: str, body: Any = None, *, key: str | None = None) -> Any:
        """The decoded body of a call that must answer 200; amounts come back as Decimal.

        ``key`` makes the call as another account, e.g. an agent reading its own balance.
        """
        content = None if body is None else simplejson.dumps(body, use_decimal=True)
        headers = {} if body is None else {"Content-Type": "application/json"}
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        response = self.http.request(method, path, content=content, headers=headers)
        assert response.status_code == 200, f"{method} {path}: {response.text}"
        return simplejson.loads(response.content, use_decimal=True)

    def register(self, agent_ids: list[str]) -> dict[str, str]:
        """Creates the agents; returns each new agent's own API key."""
        return self.call("POST", "/admin/agents", {"agent_ids": agent_ids})["keys"]

    def set_faults(self, knobs: dict[str, Any]) -> None:
        self.call("POST", "/admin/faults", knobs)

    def calm(self) -> None:
        self.set_faults(CALM_KNOBS)

    def stats(self) -> dict[str, Any]:
        return self.call("GET", "/admin/stats")

    def audit(self) -> dict[str, Any]:
        return self.call("GET", "/admin/audit")

    def balance(self, agent_key: str) -> Decimal:
        """An agent's balance, read with its own key (which sees only its own row)."""
        [row] = self.call("GET", "/wallet/balances", key=agent_key)["agents"]
        return row["usdc"]

    def transactions(self, idempotency_key: str) -> list[dict[str, Any]]:
        path = f"/wallet/transactions?idempotency_key={idempotency_key}"
        return self.call("GET", path)["transactions"]

    def balances(self) -> dict[str, Decimal]:
        """Every agent's balance, paging through the treasury's view."""
        found: dict[str, Decimal] = {}
        cursor = None
        while True:
            page = self.call(
                "GET", "/wallet/balances?limit=1000" + (f"&cursor={cursor}" if cursor else "")
            )
            found.update({row["agent_id"]: row["usdc"] for row in page["agents"]})
            cursor = page["next_cursor"]
            if not cursor:
                return found


def fault_counts(before: dict[str, Any], after: dict[str, Any]) -> Counter[str]:
    """Faults the sandbox injected between two stats snapshots, by kind (latency left out)."""
    return Counter(
        {
            kind: after["faults"].get(kind, 0) - before["faults"].get(kind, 0)
            for kind in INJECTED_KINDS
        }
    )


@dataclass
class FaultFigures:
    """What the suite did and found, summed over the schedules that ran."""

    payout_schedules: int = 0
    spark_schedules: int = 0
    payout_runs: int = 0
    payout_runs_aborted: int = 0
    payout_seconds: float = 0.0
    unknown_outcomes: int = 0
    found_paid_by_lookup: int = 0
    top_ups: int = 0
    kill_schedules: int = 0
    spark_kills: int = 0
    kills_after_commit: int = 0
    kills_mid_transfer: int = 0
    kill_seconds: float = 0.0
    faults: Counter[str] = field(default_factory=Counter)
    double_payments: int = 0
    lost_payments: int = 0

    def summary(self) -> list[str]:
        kinds = ", ".join(f"{kind} {count}" for kind, count in sorted(self.faults.items()))
        headline = (
            f"fault suite: {self.payout_schedules} payout schedules ({self.spark_schedules} of "
            f"them sent from Spark tasks), {self.kill_schedules} kill schedules ({self.spark_kills} "
            "of a Spark fan-out), "
            f"{sum(self.faults.values())} faults injected ({kinds}), "
            f"{self.double_payments} double payments, {self.lost_payments} lost payments"
        )
        payout = (
            f"fault suite: payout layer: {self.payout_runs} runs ({self.payout_runs_aborted} "
            f"stopped by a failed lookup), {self.unknown_outcomes} unknown outcomes, "
            f"{self.found_paid_by_lookup} found paid by lookup, {self.top_ups} top-ups, "
            f"{self.payout_seconds:.1f} s"
        )
        kills = (
            f"fault suite: SIGKILL: {self.kills_after_commit} of {self.kill_schedules} kills "
            f"after a commit, {self.kills_mid_transfer} mid-transfer, {self.kill_seconds:.1f} s"
        )
        return [headline, payout, kills]


FIGURES = pytest.StashKey[FaultFigures]()


@pytest.fixture(scope="session")
def fault_figures(pytestconfig: pytest.Config) -> FaultFigures:
    """The session's figures, printed when the session ends."""
    return pytestconfig.stash.setdefault(FIGURES, FaultFigures())


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    figures = config.stash.get(FIGURES, None)
    if figures is not None:
        for line in figures.summary():
            terminalreporter.write_line(line)
