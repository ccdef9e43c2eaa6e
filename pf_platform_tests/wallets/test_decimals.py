"""Exact amounts from the API to Delta and back: zero, the smallest units and very large ones.

Contract: every balance reads back from agents.wallets with the same value and, at the column's
scale, the same digits; a balance that would need rounding is refused before anything is written.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pyarrow as pa
import pytest

from pf_platform.resources.payments.models import Balance
from pf_platform.wallets.staging import WalletDataError
from pf_platform.wallets.sync import sync_wallets
from pf_platform.wallets.table import WalletTableError, read_as_of

# (usdc, btc, eth) per agent, each value exactly as the table must give it back.
EDGES = {
    "zero": ("0", "0", "0"),
    "smallest": ("0.000001", "0.00000001", "0.000000000000000001"),
    "largest": (
        "999999999999.999999",  # the most the sandbox mints in one go
        "999999999999999999999999999999.99999999",  # DECIMAL(38,8) at its limit
        "99999999999999999999.999999999999999999",  # DECIMAL(38,18) at its limit
    ),
    "ragged": ("12.5", "0.1", "3.000000000000000123"),
}


def test_edge_values_round_trip_exactly(wallets):
    for name, (usdc, btc, eth) in EDGES.items():
        agent = wallets.agent(name)
        wallets.register(agent)
        if Decimal(usdc):
            wallets.fund(agent, usdc)
        wallets.set_crypto(agent, btc=btc, eth=eth)

    wallets.sync()

    rows = read_as_of(wallets.uri, agents=[wallets.agent(name) for name in EDGES]).rows
    values = {row["agent_id"]: row for row in rows.to_pylist()}
    for name, expected in EDGES.items():
        row = values[wallets.agent(name)]
        for column, text, scale in zip(("usdc", "btc", "eth"), expected, (6, 8, 18), strict=True):
            # Decimal comparison is exact, and the exponent shows the digits kept at full scale.
            assert row[column] == Decimal(text), (name, column)
            assert row[column].as_tuple().exponent == -scale, (name, column)
    assert str(values[wallets.agent("smallest")]["eth"]) == "1E-18"
    assert str(values[wallets.agent("largest")]["eth"]) == EDGES["largest"][2]
    assert rows.schema.field("eth").type == pa.decimal128(38, 18)


@pytest.mark.parametrize(
    ("balance", "message"),
    [
        (Balance("x", Decimal(0), Decimal("0.000000001"), Decimal(0), None), "btc 1E-9"),
        (Balance("x", Decimal(0), Decimal(0), Decimal(10) ** 20, None), "eth 1"),
        (Balance("x", Decimal("1E-7"), Decimal(0), Decimal(0), None), "usdc 1E-7"),
    ],
)
def test_a_balance_that_would_be_rounded_is_refused(tmp_path, balance, message):
    uri = str(tmp_path / "agents" / "wallets")

    async def listing():
        yield [Balance("fine", Decimal(1), Decimal(1), Decimal(1), None), balance]

    with pytest.raises(WalletDataError, match=message):
        asyncio.run(sync_wallets(listing(), uri))

    # Refused while staging, before the table was even created.
    with pytest.raises(WalletTableError, match="no wallets table"):
        read_as_of(uri)
