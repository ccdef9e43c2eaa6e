"""What the benchmarks share: sandbox set-up calls and process measurements."""

from __future__ import annotations

import os
import resource
from decimal import Decimal
from pathlib import Path

import httpx
import simplejson

from pf_platform.resources.payments.models import MAX_BATCH_SIZE

REGISTER_CHUNK = 20_000


class SandboxAdmin:
    """The few treasury calls the benchmark makes to set the sandbox up."""

    def __init__(self, base_url: str, key: str, server_pid: int | None = None) -> None:
        self.server_pid = server_pid
        self._http = httpx.Client(
            base_url=base_url,
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
            timeout=120,
            trust_env=False,
        )

    def post(self, path: str, body: dict) -> dict:
        response = self._http.post(path, content=simplejson.dumps(body, use_decimal=True))
        response.raise_for_status()
        return simplejson.loads(response.text, use_decimal=True)

    def register(self, agent_ids: list[str]) -> None:
        """Creates the agents in bulk, without asking for their keys."""
        for start in range(0, len(agent_ids), REGISTER_CHUNK):
            chunk = agent_ids[start : start + REGISTER_CHUNK]
            self.post("/admin/agents", {"agent_ids": chunk, "return_keys": False})

    def pay(self, agent_ids: list[str], amount: Decimal, round_name: str) -> None:
        """Pays each agent ``amount`` from the treasury, 1,000 transfers per request."""
        for start in range(0, len(agent_ids), MAX_BATCH_SIZE):
            transfers = [
                {
                    "recipient_agent_id": agent_id,
                    "amount_usdc": amount,
                    "memo": "wallet benchmark",
                    "idempotency_key": f"bench-wallets-{round_name}-{agent_id}",
                }
                for agent_id in agent_ids[start : start + MAX_BATCH_SIZE]
            ]
            self.post("/wallet/batch-transfer", {"transfers": transfers})

    def set_faults(self, **knobs: object) -> dict:
        return self.post("/admin/faults", knobs)

    def stats(self) -> dict:
        response = self._http.get("/admin/stats")
        response.raise_for_status()
        return response.json()

    def audit(self) -> dict:
        """The sandbox's books: balances by kind of account, and whether they add up."""
        response = self._http.get("/admin/audit")
        response.raise_for_status()
        return simplejson.loads(response.text, use_decimal=True)

    def set_crypto(self, agent_id: str, btc: Decimal, eth: Decimal) -> None:
        self.post("/admin/balances", {"agent_id": agent_id, "btc": btc, "eth": eth})

    def close(self) -> None:
        self._http.close()


def peak_rss_mib() -> float:
    # Linux reports ru_maxrss in KiB.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def children_cpu_seconds() -> float:
    """CPU time of this process's running children (the sandbox), from /proc; 0 elsewhere.

    On a busy machine the wall time says more about the neighbours than about the sync; the
    CPU time of both processes does not.
    """
    total = 0.0
    proc = Path("/proc")
    if not proc.is_dir():
        return total
    ticks = os.sysconf("SC_CLK_TCK")
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # Counted from the state field after the command name: ppid, then utime and stime.
        if int(fields[1]) == os.getpid():
            total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def process_cpu_seconds(pid: int | None) -> float:
    """User plus system CPU seconds of one process so far, from /proc; 0 elsewhere or if gone."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
