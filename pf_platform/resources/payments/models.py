"""Plain values exchanged with the Purple Flea payments API.

Every amount is a ``decimal.Decimal``. Requests are built from these objects with ``to_wire`` and
responses are read back with ``from_wire``; the JSON layer (``pf_platform.wire``) keeps amounts
as exact decimal literals in both directions. Nothing here imports Dagster, so
Spark executors can use it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from pf_platform.payouts.money import InvalidAmountError, to_usdc

MAX_BATCH_SIZE = 1000


def wire_amount(amount: Decimal) -> Decimal:
    """Returns ``amount`` in its shortest plain form for the JSON body.

    ``Decimal("0.002000")`` becomes ``0.002`` and ``Decimal("1E+2")`` becomes ``100``: the value
    is unchanged, only trailing zeros and exponents go, so a request log reads plainly. Built
    from the exact fixed-point text: ``normalize`` would round a value of more than 28 digits
    to the context's precision.
    """
    text = format(amount, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return Decimal(text)


def _decimal(value: Any, name: str) -> Decimal:
    """Reads a non-USDC amount (BTC, ETH) from a parsed body without any float step."""
    if isinstance(value, (Decimal, int, str)) and not isinstance(value, bool):
        return Decimal(value)
    raise InvalidAmountError(f"{name} must be an exact decimal, got {type(value).__name__}")


def _optional_usdc(value: Any) -> Decimal | None:
    return None if value is None else to_usdc(value)


def _optional_str(value: Any) -> str | None:
    return None if value is None else str(value)


@dataclass(frozen=True, slots=True)
class Transfer:
    """One payment to one agent, as sent in a batch.

    Attributes:
        recipient_agent_id: the agent to pay.
        amount_usdc: a positive amount with at most six decimal places.
        memo: free text stored with the transaction.
        idempotency_key: deterministic key; the server pays each key at most once.
    """

    recipient_agent_id: str
    amount_usdc: Decimal
    memo: str
    idempotency_key: str

    def __post_init__(self) -> None:
        amount = to_usdc(self.amount_usdc)
        if amount <= 0:
            raise InvalidAmountError(f"transfer amount must be positive, got {amount}")
        # The dataclass is frozen; normalising the amount once here keeps every copy exact.
        object.__setattr__(self, "amount_usdc", amount)
        if not self.recipient_agent_id:
            raise ValueError("recipient_agent_id must not be empty")
        if not self.idempotency_key or not self.idempotency_key.strip():
            raise ValueError("idempotency_key must not be empty: a transfer is never sent bare")

    def to_wire(self) -> dict[str, Any]:
        """The item as it appears in the ``transfers`` list of a batch request."""
        return {
            "recipient_agent_id": self.recipient_agent_id,
            "amount_usdc": wire_amount(self.amount_usdc),
            "memo": self.memo,
            "idempotency_key": self.idempotency_key,
        }


@dataclass(frozen=True, slots=True)
class TransferResult:
    """The server's outcome for one item of a batch.

    Attributes:
        agent_id: the recipient.
        idempotency_key: the key the item was sent with.
        success: True when the money moved (now or, if ``replayed``, on an earlier request).
        tx_id: the ledger transaction id when ``success``.
        error: the per-item error code when not ``success`` (``unknown_agent``,
            ``invalid_amount``, ``insufficient_funds``, ``missing_idempotency_key``).
        amount_usdc: the amount the server recorded, when it reports one.
        replayed: True when the key had already been paid and this is the stored outcome.
    """

    agent_id: str
    idempotency_key: str | None
    success: bool
    tx_id: str | None
    error: str | None
    amount_usdc: Decimal | None
    replayed: bool

    @classmethod
    def from_wire(cls, item: dict[str, Any]) -> TransferResult:
        """Builds a result from one element of the response's ``results`` list."""
        return cls(
            agent_id=str(item["agent_id"]),
            idempotency_key=_optional_str(item.get("idempotency_key")),
            success=bool(item["success"]),
            tx_id=_optional_str(item.get("tx_id")),
            error=_optional_str(item.get("error")),
            amount_usdc=_optional_usdc(item.get("amount_usdc")),
            replayed=bool(item.get("replayed", False)),
        )


@dataclass(frozen=True, slots=True)
class Balance:
    """One agent's wallet as listed by ``GET /wallet/balances``."""

    agent_id: str
    usdc: Decimal
    btc: Decimal
    eth: Decimal
    last_tx_id: str | None

    @classmethod
    def from_wire(cls, item: dict[str, Any]) -> Balance:
        """Builds a balance from one element of the response's ``agents`` list."""
        return cls(
            agent_id=str(item["agent_id"]),
            usdc=to_usdc(item["usdc"]),
            btc=_decimal(item.get("btc", 0), "btc"),
            eth=_decimal(item.get("eth", 0), "eth"),
            last_tx_id=_optional_str(item.get("last_tx_id")),
        )


@dataclass(frozen=True, slots=True)
class TransactionRecord:
    """A committed ledger transaction, as returned for reconciliation.

    ``created_at`` is kept as the server's timestamp text; callers parse it if they need to.
    """

    tx_id: str
    idempotency_key: str | None
    kind: str
    recipient_agent_id: str | None
    amount_usdc: Decimal
    memo: str | None
    created_at: str | None
    escrow_id: str | None = None

    @classmethod
    def from_wire(cls, item: dict[str, Any]) -> TransactionRecord:
        """Builds a record from one element of the response's ``transactions`` list."""
        return cls(
            tx_id=str(item["tx_id"]),
            idempotency_key=_optional_str(item.get("idempotency_key")),
            kind=str(item.get("kind", "")),
            recipient_agent_id=_optional_str(item.get("recipient_agent_id")),
            amount_usdc=to_usdc(item["amount_usdc"]),
            memo=_optional_str(item.get("memo")),
            created_at=_optional_str(item.get("created_at")),
            escrow_id=_optional_str(item.get("escrow_id")),
        )


@dataclass(frozen=True, slots=True)
class Escrow:
    """An escrow as the server reports it.

    Attributes:
        escrow_id: the server's id.
        status: ``locked`` while it can be released, then ``released`` or ``refunded``.
        amount_usdc: the amount locked at creation.
        remaining_usdc: what is still locked (less than ``amount_usdc`` once some of several
            winners are paid).
        winners: how many agents share the amount.
        eligible_agents: agents that may receive a release.
        release_condition: the condition as given at creation (text or a JSON object).
        replayed: True when a create with a known idempotency key returned the first escrow.
        raw: the full response object, for fields this class does not name (``released``...).
    """

    escrow_id: str
    status: str
    amount_usdc: Decimal | None
    remaining_usdc: Decimal | None
    winners: int | None
    eligible_agents: tuple[str, ...]
    release_condition: Any
    memo: str | None
    referrer_agent_id: str | None
    idempotency_key: str | None
    created_at: str | None
    expires_at: str | None
    replayed: bool
    raw: dict[str, Any] = field(compare=False, repr=False)

    @classmethod
    def from_wire(cls, item: dict[str, Any]) -> Escrow:
        """Builds an escrow from a create or get response."""
        winners = item.get("winners")
        return cls(
            escrow_id=str(item["escrow_id"]),
            status=str(item.get("status", "")),
            amount_usdc=_optional_usdc(item.get("amount_usdc")),
            remaining_usdc=_optional_usdc(item.get("remaining_usdc")),
            winners=None if winners is None else int(winners),
            eligible_agents=tuple(str(a) for a in item.get("eligible_agents") or ()),
            release_condition=item.get("release_condition"),
            memo=_optional_str(item.get("memo")),
            referrer_agent_id=_optional_str(item.get("referrer_agent_id")),
            idempotency_key=_optional_str(item.get("idempotency_key")),
            created_at=_optional_str(item.get("created_at")),
            expires_at=_optional_str(item.get("expires_at")),
            replayed=bool(item.get("replayed", False)),
            raw=dict(item),
        )


@dataclass(frozen=True, slots=True)
class EscrowRelease:
    """The outcome of releasing an escrow to one agent.

    Attributes:
        share_usdc: the winner's share before fees.
        amount_usdc: what the recipient received, the share net of ``fee_usdc``.
        fee_usdc: the platform fee, ``referrer_fee_usdc`` + ``platform_fee_usdc``.
        status: the escrow's status after this release.
        replayed: True when this recipient had already been paid and this is that payment.
    """

    escrow_id: str
    recipient_agent_id: str
    tx_id: str
    share_usdc: Decimal | None
    amount_usdc: Decimal | None
    fee_usdc: Decimal | None
    referrer_fee_usdc: Decimal | None
    platform_fee_usdc: Decimal | None
    status: str | None
    replayed: bool

    @classmethod
    def from_wire(
        cls, item: dict[str, Any], *, escrow_id: str, recipient_agent_id: str
    ) -> EscrowRelease:
        """Builds a release from the response of ``POST /escrow/release``."""
        return cls(
            escrow_id=str(item.get("escrow_id", escrow_id)),
            recipient_agent_id=str(item.get("recipient_agent_id", recipient_agent_id)),
            tx_id=str(item["tx_id"]),
            share_usdc=_optional_usdc(item.get("share_usdc")),
            amount_usdc=_optional_usdc(item.get("amount_usdc")),
            fee_usdc=_optional_usdc(item.get("fee_usdc")),
            referrer_fee_usdc=_optional_usdc(item.get("referrer_fee_usdc")),
            platform_fee_usdc=_optional_usdc(item.get("platform_fee_usdc")),
            status=_optional_str(item.get("status")),
            replayed=bool(item.get("replayed", False)),
        )
