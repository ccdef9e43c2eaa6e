"""The wallet sync against a real sandbox and a real Delta table.

Contract: every listed agent ends up in agents.wallets exactly once with the API's values; a
row is rewritten only when its balances or last_tx_id changed, and then shows in the change
feed with its earlier value still readable by time travel; agents registered while the listing
runs are neither missed nor listed twice; an agent listed twice keeps its last listing.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from datetime import timedelta
from decimal import Decimal

import pytest
from deltalake import DeltaTable

from pf_platform.resources.payments.models import Balance
from pf_platform.wallets.sync import sync_wallets
from pf_platform.wallets.table import (
    CHANGE_FEED_PROPERTY,
    WALLET_SCHEMA,
    read_as_of,
    read_changes,
)


def _rows(uri: str, as_of=None) -> dict[str, dict]:
    return {row["agent_id"]: row for row in read_as_of(uri, as_of).rows.to_pylist()}


def _pages(*pages: list[Balance]):
    async def listing():
        for page in pages:
            yield page

    return listing()


def _wallet(agent_id: str, usdc: str, last_tx_id: str | None = None) -> Balance:
    return Balance(agent_id, Decimal(usdc), Decimal(0), Decimal(0), last_tx_id)


def test_first_sync_inserts_everyone_then_an_unchanged_sync_rewrites_nothing(wallets):
    agents = [wallets.agent(index) for index in range(23)]
    wallets.register(*agents)
    paid_tx = wallets.pay(agents[3], "7.25")
    wallets.set_crypto(agents[4], btc="0.5", eth="1.25")
    total = wallets.agent_count()

    # Small pages, parts and flushes, so paging, spilling and de-duplicating all take turns.
    first = wallets.sync(page_size=10, parts=3, flush_rows=7)

    assert (first.agents_seen, first.inserted) == (total, total)
    assert (first.updated, first.unchanged) == (0, 0)
    assert first.pages == -(-total // 10)
    assert (first.duplicates, first.committed, first.table_version) == (0, True, 1)
    table = DeltaTable(wallets.uri)
    assert table.metadata().configuration[CHANGE_FEED_PROPERTY] == "true"
    assert table.schema().to_arrow() == WALLET_SCHEMA
    rows = _rows(wallets.uri)
    assert set(rows) == set(wallets.all_listed())
    assert rows[agents[3]]["usdc"] == Decimal("7.25")
    assert rows[agents[3]]["last_tx_id"] == paid_tx
    assert (rows[agents[4]]["btc"], rows[agents[4]]["eth"]) == (Decimal("0.5"), Decimal("1.25"))
    assert rows[agents[0]]["created_at"] == rows[agents[0]]["updated_at"]

    second = wallets.sync(page_size=10, parts=3, flush_rows=7)
    third = wallets.sync()

    for report in (second, third):
        assert (report.agents_seen, report.inserted, report.updated) == (total, 0, 0)
        assert (report.unchanged, report.committed, report.table_version) == (total, False, 1)
    assert DeltaTable(wallets.uri).version() == 1
    assert read_changes(wallets.uri, 2).num_rows == 0
    assert _rows(wallets.uri) == rows  # updated_at included: no row was rewritten
    assert first.usdc_total == second.usdc_total


def test_a_change_shows_in_the_feed_and_time_travel_returns_the_earlier_value(wallets):
    agent, bystander = wallets.agent("payee"), wallets.agent("bystander")
    wallets.register(agent, bystander)
    wallets.pay(agent, "10")
    first = wallets.sync()
    before = _rows(wallets.uri)[agent]
    committed_first = read_as_of(wallets.uri, first.table_version).committed_at
    # Time travel is probed midway between the two commits, so they must lie well apart: a
    # sync of this small set now takes less than the 100 ms the check below wants.
    time.sleep(0.3)

    new_tx = wallets.pay(agent, "0.000001")
    wallets.set_crypto(bystander, eth="0.000000000000000001")
    second = wallets.sync()

    assert (second.updated, second.inserted, second.table_version) == (2, 0, 2)
    assert second.unchanged == second.agents_seen - 2
    untouched = _rows(wallets.uri, 1)
    for agent_id, row in _rows(wallets.uri, 2).items():
        if agent_id not in (agent, bystander):
            assert row == untouched[agent_id]  # updated_at too: not rewritten
    after = _rows(wallets.uri)[agent]
    assert after["usdc"] == Decimal("10.000001")
    assert after["last_tx_id"] == new_tx
    assert after["created_at"] == before["created_at"]
    assert after["updated_at"] > before["updated_at"]

    feed = read_changes(wallets.uri, 2).to_pylist()
    # Ordered by version, then agent ("...-bystander" < "...-payee"), then before -> after.
    assert [(row["agent_id"], row["_change_type"]) for row in feed] == [
        (bystander, "update_preimage"),
        (bystander, "update_postimage"),
        (agent, "update_preimage"),
        (agent, "update_postimage"),
    ]
    by_kind = {(row["agent_id"], row["_change_type"]): row for row in feed}
    assert by_kind[(agent, "update_preimage")]["usdc"] == Decimal(10)
    assert by_kind[(agent, "update_postimage")]["usdc"] == Decimal("10.000001")
    assert by_kind[(bystander, "update_postimage")]["eth"] == Decimal("1E-18")
    assert {row["_commit_version"] for row in feed} == {2}
    inserts = Counter(row["_change_type"] for row in read_changes(wallets.uri, 0, 1).to_pylist())
    assert inserts == {"insert": first.agents_seen}

    assert _rows(wallets.uri, 1)[agent]["usdc"] == Decimal(10)
    # Midway between the two commits: Delta resolves a time on the commit file's modification
    # time, which can trail the commit's own timestamp by some milliseconds.
    committed_second = read_as_of(wallets.uri, 2).committed_at
    between = committed_first + (committed_second - committed_first) / 2
    assert committed_second - committed_first > timedelta(milliseconds=100)
    assert read_as_of(wallets.uri, between).version == 1
    assert _rows(wallets.uri, between)[agent] == before


def test_agents_registered_during_the_listing_are_never_missed_nor_listed_twice(wallets):
    agents = [wallets.agent(index) for index in range(12)]
    wallets.register(*agents)
    added: dict[str, str] = {}

    def register_between_pages(page_number: int, page: list[Balance]) -> None:
        if page_number > 2:
            # After the last page nothing is listed any more, so only early pages add agents.
            return
        cursor = page[-1].agent_id
        # One id the cursor has already passed, one it has not reached; "~" sorts after
        # letters and digits, so the second one is always ahead of the listing.
        behind, ahead = f"{page[0].agent_id}-late{page_number}", f"~{wallets.prefix}-{page_number}"
        assert behind < cursor < ahead
        wallets.register(behind, ahead)
        added[behind], added[ahead] = "behind", "ahead"

    before = wallets.agent_count()
    first = wallets.sync(page_size=5, on_page=register_between_pages)

    ahead = {agent for agent, where in added.items() if where == "ahead"}
    behind = {agent for agent, where in added.items() if where == "behind"}
    assert first.pages >= 4
    assert len(ahead) == len(behind) == 2
    assert first.duplicates == 0
    rows = _rows(wallets.uri)
    # Whatever existed when the listing started is there, once; so is every agent registered
    # ahead of the cursor. Those registered behind it wait for the next sync.
    assert first.agents_seen == before + len(ahead) == len(rows)
    assert ahead <= set(rows)
    assert not behind & set(rows)

    second = wallets.sync()

    assert (second.inserted, second.updated) == (len(behind), 0)
    assert set(_rows(wallets.uri)) == set(wallets.all_listed())
    feed = read_changes(wallets.uri, 0).to_pylist()
    inserted = Counter(row["agent_id"] for row in feed if row["_change_type"] == "insert")
    assert set(inserted.values()) == {1}
    assert set(inserted) == set(wallets.all_listed())


def test_an_agent_listed_twice_keeps_its_last_listing(wallets, tmp_path):
    uri = str(tmp_path / "direct" / "agents" / "wallets")
    pages = _pages(
        [_wallet("a", "1", "tx-1"), _wallet("b", "5"), _wallet("a", "2", "tx-2")],
        [_wallet("c", "3"), _wallet("a", "4", "tx-4")],
        [_wallet("b", "6", "tx-6")],
    )

    report = asyncio.run(sync_wallets(pages, uri, parts=2, flush_rows=2))

    assert (report.agents_seen, report.duplicates, report.inserted, report.pages) == (3, 3, 3, 3)
    rows = _rows(uri)
    assert {agent: (row["usdc"], row["last_tx_id"]) for agent, row in rows.items()} == {
        "a": (Decimal(4), "tx-4"),
        "b": (Decimal(6), "tx-6"),
        "c": (Decimal(3), None),
    }
    assert report.usdc_total == Decimal(13)


@pytest.mark.parametrize("parts", [1, 16])
def test_the_result_does_not_depend_on_how_the_listing_is_split(wallets, tmp_path, parts):
    wallets.register(*(wallets.agent(index) for index in range(30)))
    wallets.pay(wallets.agent(7), "1.5")

    report = wallets.sync(page_size=7, parts=parts, flush_rows=10)

    assert report.inserted == report.agents_seen == wallets.agent_count()
    assert _rows(wallets.uri)[wallets.agent(7)]["usdc"] == Decimal("1.5")
