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
import random
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

import click

from pf_platform.bench.common import (
    SandboxAdmin,
    children_cpu_seconds,
    cpu_seconds,
    peak_rss_mib,
)
from pf_platform.resources.payments.client import PurpleFleaClient
from pf_platform.resources.payments.models import MAX_BATCH_SIZE
from pf_platform.sandbox.server import SandboxProcess
from pf_platform.wallets.sync import SyncReport, sync_from_api
from pf_platform.wallets.table import wallets_uri


def _line(name: str, report: SyncReport, cpu: float, server_cpu: float) -> str:
    return (
        f"{name:<24} {report.seconds:6.2f} s (listing {report.listing_seconds:5.2f} s; CPU "
        f"{cpu:5.2f} s here, {server_cpu:5.2f} s in the sandbox)  "
        f"{report.rows_per_second:8,.0f} agents/s  "
        f"seen {report.agents_seen:,}  inserted {report.inserted:,}  updated {report.updated:,}  "
        f"unchanged {report.unchanged:,}  pages {report.pages}  version {report.table_version}  "
        f"peak RSS {peak_rss_mib():,.0f} MiB"
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
            admin = SandboxAdmin(sandbox.base_url, sandbox.treasury_key)
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
            click.echo(f"baseline peak RSS {peak_rss_mib():,.0f} MiB")

            reports = []

            def timed_sync(name: str) -> None:
                cpu, server_cpu = cpu_seconds(), children_cpu_seconds()
                report = asyncio.run(_sync(sandbox.base_url, sandbox.treasury_key, uri, page_size))
                reports.append(report)
                cpu, server_cpu = cpu_seconds() - cpu, children_cpu_seconds() - server_cpu
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
