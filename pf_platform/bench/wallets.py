"""Benchmark of the wallet sync: 100K agents, a first sync of all inserts, then ~1% changed.

Run it with ``python -m pf_platform.bench.wallets`` (``--help`` lists the knobs). It starts a
sandbox in a temporary folder, registers the agents in bulk, funds a few of them and gives some
BTC and ETH, then times:

1. the first sync, where every agent is inserted;
2. a second sync after about 1% of the balances changed, which updates only those;
3. a third sync with nothing changed, which commits nothing.

For each it prints the wall time (and the part spent listing), the CPU time of this process
(the sandbox server runs in its own), agents per second and this process's peak resident
memory (``ru_maxrss``, which never goes down, so each figure is the peak so far). It exits with
status 1 when a sync takes longer than ``--budget-seconds``.
"""

from __future__ import annotations

import asyncio
import os
import random
import resource
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

import click
import httpx
import simplejson

from pf_platform.resources.payments.client import PurpleFleaClient
from pf_platform.resources.payments.models import MAX_BATCH_SIZE
from pf_platform.sandbox.server import SandboxProcess
from pf_platform.wallets.sync import SyncReport, sync_from_api
from pf_platform.wallets.table import wallets_uri

REGISTER_CHUNK = 20_000


class _Admin:
    """The few treasury calls the benchmark makes to set the sandbox up."""

    def __init__(self, base_url: str, key: str) -> None:
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

    def set_crypto(self, agent_id: str, btc: Decimal, eth: Decimal) -> None:
        self.post("/admin/balances", {"agent_id": agent_id, "btc": btc, "eth": eth})

    def close(self) -> None:
        self._http.close()


def _peak_rss_mb() -> float:
    # Linux reports ru_maxrss in KiB.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _children_cpu_seconds() -> float:
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


def _line(name: str, report: SyncReport, cpu: float, server_cpu: float) -> str:
    return (
        f"{name:<24} {report.seconds:6.2f} s (listing {report.listing_seconds:5.2f} s; CPU "
        f"{cpu:5.2f} s here, {server_cpu:5.2f} s in the sandbox)  "
        f"{report.rows_per_second:8,.0f} agents/s  "
        f"seen {report.agents_seen:,}  inserted {report.inserted:,}  updated {report.updated:,}  "
        f"unchanged {report.unchanged:,}  pages {report.pages}  version {report.table_version}  "
        f"peak RSS {_peak_rss_mb():,.0f} MiB"
    )


async def _sync(base_url: str, key: str, uri: str, page_size: int) -> SyncReport:
    async with PurpleFleaClient(base_url, key) as client:
        return await sync_from_api(client, uri, page_size=page_size)


@click.command()
@click.option("--agents", default=100_000, show_default=True, type=click.IntRange(1))
@click.option(
    "--changed",
    default=0.01,
    show_default=True,
    type=click.FloatRange(0, 1),
    help="Fraction of agents whose balance changes before the second sync.",
)
@click.option("--page-size", default=MAX_BATCH_SIZE, show_default=True, type=click.IntRange(1))
@click.option(
    "--budget-seconds",
    default=10.0,
    show_default=True,
    help="Exit with status 1 when a sync takes longer.",
)
@click.option("--seed", default=7, show_default=True, help="Seed for picking agents.")
def main(agents: int, changed: float, page_size: int, budget_seconds: float, seed: int) -> None:
    """Time the agent_wallets sync against a sandbox with many agents."""
    picker = random.Random(seed)
    agent_ids = [f"agent-{index:07d}" for index in range(agents)]
    changed_count = max(1, round(agents * changed)) if changed else 0

    with tempfile.TemporaryDirectory(prefix="pf-bench-wallets-") as folder:
        root = Path(folder)
        uri = wallets_uri(str(root / "lake"))
        treasury = Decimal(10) ** 9
        with SandboxProcess(root / "sandbox" / "ledger.db", treasury_usdc=treasury) as sandbox:
            admin = _Admin(sandbox.base_url, sandbox.treasury_key)
            started = time.perf_counter()
            admin.register(agent_ids)
            funded = picker.sample(agent_ids, min(agents, 1000))
            admin.pay(funded, Decimal("12.345678"), "seed")
            for agent_id in funded[:100]:
                admin.set_crypto(agent_id, Decimal("0.00000001"), Decimal("1E-18"))
            click.echo(
                f"setup: {agents:,} agents registered, {len(funded):,} funded, in "
                f"{time.perf_counter() - started:.1f} s (not timed below)"
            )
            click.echo(f"baseline peak RSS {_peak_rss_mb():,.0f} MiB")

            reports = []

            def timed_sync(name: str) -> None:
                cpu, server_cpu = _cpu_seconds(), _children_cpu_seconds()
                report = asyncio.run(_sync(sandbox.base_url, sandbox.treasury_key, uri, page_size))
                reports.append(report)
                cpu, server_cpu = _cpu_seconds() - cpu, _children_cpu_seconds() - server_cpu
                click.echo(_line(name, report, cpu, server_cpu))

            timed_sync("sync 1 (all inserts)")
            admin.pay(picker.sample(agent_ids, changed_count), Decimal("0.000001"), "change")
            timed_sync(f"sync 2 ({changed_count:,} changed)")
            timed_sync("sync 3 (no change)")
            admin.close()

    slowest = max(report.seconds for report in reports)
    if slowest > budget_seconds:
        click.echo(f"FAIL: slowest sync took {slowest:.2f} s, over {budget_seconds} s", err=True)
        sys.exit(1)
    click.echo(f"ok: every sync within {budget_seconds} s")


if __name__ == "__main__":
    main()
