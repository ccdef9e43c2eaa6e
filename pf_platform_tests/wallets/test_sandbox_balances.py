"""POST /admin/balances: the sandbox knob that sets an agent's BTC and ETH for the wallet tests.

Contract: the values come back exactly from the balances endpoint, USDC and last_tx_id are left
alone, and anything that is not an exact, non-negative amount in satoshi or wei is refused.
"""

from __future__ import annotations

from decimal import Decimal

import httpx
import pytest
import simplejson


def test_set_balances_are_listed_exactly(wallets):
    agent = wallets.agent("a")
    wallets.register(agent)
    tx_id = wallets.pay(agent, "2.5")

    answer = wallets.set_crypto(agent, btc="12345678901234567890123456789.12345678", eth="1E-18")

    assert answer == {
        "agent_id": agent,
        "btc": Decimal("12345678901234567890123456789.12345678"),
        "eth": Decimal("0.000000000000000001"),
    }
    row = wallets.listed(agent)
    assert row["btc"] == Decimal("12345678901234567890123456789.12345678")
    assert row["eth"] == Decimal("1E-18")
    assert row["usdc"] == Decimal("2.5")
    assert row["last_tx_id"] == tx_id


def test_one_currency_can_be_set_alone(wallets):
    agent = wallets.agent("a")
    wallets.register(agent)
    wallets.set_crypto(agent, btc="1", eth="2")

    wallets.set_crypto(agent, eth="99999999999999999999.999999999999999999")

    row = wallets.listed(agent)
    assert (row["btc"], row["eth"]) == (1, Decimal("99999999999999999999.999999999999999999"))


@pytest.mark.parametrize(
    ("field", "value", "code"),
    [
        ("btc", "1", "invalid_amount"),  # a JSON string, not a number
        ("btc", Decimal(-1), "invalid_amount"),
        ("btc", Decimal("0.000000001"), "invalid_amount"),  # below one satoshi
        ("eth", Decimal("1E-19"), "invalid_amount"),  # below one wei
        ("eth", True, "invalid_amount"),
        ("agent_id", "nobody", "unknown_agent"),
        ("agent_id", None, "invalid_request"),
    ],
)
def test_inexact_or_unknown_is_refused(wallets, field, value, code):
    agent = wallets.agent("a")
    wallets.register(agent)
    body = {"agent_id": agent, "btc": 1, field: value}

    response = httpx.post(
        f"{wallets.sandbox.base_url}/admin/balances",
        content=simplejson.dumps(body, use_decimal=True),
        headers={"Authorization": f"Bearer {wallets.sandbox.key}"},
    )

    assert response.status_code == 400
    assert response.json()["error"]["code"] == code
    assert wallets.listed(agent)["btc"] == 0


def test_only_the_treasury_may_set_balances(wallets):
    agent = wallets.agent("a")
    keys = wallets.sandbox.call("POST", "/admin/agents", {"agent_ids": [agent]})["keys"]

    response = httpx.post(
        f"{wallets.sandbox.base_url}/admin/balances",
        json={"agent_id": agent, "btc": 1},
        headers={"Authorization": f"Bearer {keys[agent]}"},
    )

    assert response.status_code == 403
    assert wallets.listed(agent)["btc"] == 0
