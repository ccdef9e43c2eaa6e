"""Concurrent writers of agents.wallets.

Contract: a sync whose commit loses to a concurrent writer reloads the table and merges again
from its staged listing (the API is not listed twice); two syncs started together both end
with every agent in the table once and inserted once; a sync that keeps losing gives up with
an error that says so, having committed nothing.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest
from deltalake import DeltaTable

from pf_platform.resources.payments.models import Balance
from pf_platform.wallets.sync import WalletCommitConflictError, sync_wallets
from pf_platform.wallets.table import read_as_of, read_changes


def _in_thread(work):
    """Runs ``work`` to completion in another thread, which can start its own event loop."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(work).result()


def test_a_lost_commit_is_merged_again_after_reloading(wallets):
    agent = wallets.agent("payee")
    wallets.register(agent)
    wallets.sync()
    wallets.pay(agent, "3")
    rival_reports = []

    def rival_commits_first(attempt: int) -> None:
        if attempt == 1:
            rival_reports.append(_in_thread(wallets.sync))

    pages = -(-wallets.agent_count() // 1000)
    requests_before = wallets.call("GET", "/admin/stats")["requests"]

    report = wallets.sync(before_merge=rival_commits_first)

    # The stats call above, then one listing by the rival and one by us: the retry merged again
    # from the staged listing instead of listing the API a second time.
    assert wallets.call("GET", "/admin/stats")["requests"] - requests_before == 1 + 2 * pages

    [rival] = rival_reports
    assert (rival.updated, rival.table_version) == (1, 2)
    # Ours reloaded version 2, found the rival had written the same change, and wrote nothing.
    assert (report.commit_attempts, report.updated, report.committed) == (2, 0, False)
    assert report.table_version == 2
    assert report.unchanged == report.agents_seen
    updates = [row for row in read_changes(wallets.uri, 2).to_pylist() if row["agent_id"] == agent]
    assert [row["_change_type"] for row in updates] == ["update_preimage", "update_postimage"]
    assert read_as_of(wallets.uri, agents=[agent]).rows["usdc"].to_pylist() == [Decimal(3)]


def test_two_syncs_started_together_both_end_with_each_agent_once(wallets):
    wallets.register(*(wallets.agent(index) for index in range(40)))
    start = threading.Barrier(2)
    results: list = [None, None]

    def sync(slot: int) -> None:
        start.wait()
        try:
            results[slot] = wallets.sync()
        except WalletCommitConflictError as exc:  # allowed, as long as it says so
            results[slot] = exc

    threads = [threading.Thread(target=sync, args=(slot,)) for slot in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    total = wallets.agent_count()
    reports = [result for result in results if not isinstance(result, Exception)]
    assert reports, results
    assert sum(report.inserted for report in reports) == total
    rows = read_as_of(wallets.uri).rows
    assert rows.num_rows == total == len(set(rows["agent_id"].to_pylist()))
    inserts = Counter(
        row["agent_id"]
        for row in read_changes(wallets.uri, 0).to_pylist()
        if row["_change_type"] == "insert"
    )
    assert len(inserts) == total and set(inserts.values()) == {1}


def test_a_sync_that_keeps_losing_gives_up_clearly_and_commits_nothing(wallets):
    agent = wallets.agent("payee")
    wallets.register(agent)
    wallets.sync()
    wallets.pay(agent, "4")
    attempts: list[int] = []

    def another_writer_commits(attempt: int) -> None:
        attempts.append(attempt)
        # Any writer touching the rows this MERGE read makes its commit fail.
        DeltaTable(wallets.uri).update(
            updates={"updated_at": "updated_at"}, predicate=f"agent_id = '{agent}'"
        )

    with pytest.raises(WalletCommitConflictError, match="after 3 MERGE attempts") as raised:
        wallets.sync(before_merge=another_writer_commits, commit_attempts=3)

    assert attempts == [1, 2, 3]
    assert "committed nothing" in str(raised.value)
    table = DeltaTable(wallets.uri)
    assert table.version() == 1 + 3  # the first sync, then only the other writer's commits
    assert {entry["operation"] for entry in table.history(3)} == {"UPDATE"}
    assert read_as_of(wallets.uri, agents=[agent]).rows["usdc"].to_pylist() == [Decimal(0)]


def test_a_listing_failure_leaves_the_table_alone(wallets):
    agent = wallets.agent("a")
    wallets.register(agent)
    wallets.sync()

    async def broken_listing():
        yield [Balance(agent, Decimal(99), Decimal(0), Decimal(0), None)]
        raise ConnectionError("the API went away mid-listing")

    with pytest.raises(ConnectionError):
        asyncio.run(sync_wallets(broken_listing(), wallets.uri))

    assert DeltaTable(wallets.uri).version() == 1
    assert read_as_of(wallets.uri, agents=[agent]).rows["usdc"].to_pylist() == [Decimal(0)]
