"""The sandbox's double-entry ledger, kept in one SQLite file.

Every movement of money is a row in ``transactions`` plus two or more rows in ``entries`` whose
signed ``amount_micros`` sum to zero. ``accounts.balance_micros`` caches the sum of an account's
entries and is updated in the same SQLite transaction, so ``audit()`` can prove the cache right.
Amounts are integer micro-USDC inside the ledger and exact ``Decimal`` values at its edges.

System accounts: ``mint`` (the source of all money; its balance is minus everything minted),
``treasury`` (the operator who pays), ``platform_fees`` and ``escrow_holding``. Agents are
accounts with role ``agent``. API keys are stored as SHA-256 hashes only.

Idempotency is per payer. A transfer's key binds to its recipient and amount once it succeeds;
a failed transfer binds nothing, so the same key may be tried again after the failure is fixed.

Escrow release arithmetic, all in integer micro-USDC with floor division:

- ``share = amount // winners`` (creation refuses an amount that does not split exactly);
- ``fee = share // 100`` (1%, rounded down, so a rounding residue favours the winner);
- ``referrer_fee = fee * 15 // 100`` when the escrow names a referrer, else 0;
- ``platform_fee = fee - referrer_fee`` (the platform absorbs the referrer's rounding residue);
- the winner receives ``share - fee``.

For 10 USDC with a referrer: winner 9.9, fee 0.1, referrer 0.015, platform 0.085. The three
credits always add up to the share, so nothing is created or lost by rounding.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import random
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation, localcontext
from pathlib import Path
from typing import Any, NamedTuple

import simplejson

from pf_platform.payouts.money import MICROS_PER_USDC, InvalidAmountError, to_micros

MINT = "mint"
TREASURY = "treasury"
PLATFORM_FEES = "platform_fees"
ESCROW_HOLDING = "escrow_holding"
SYSTEM_ACCOUNTS = (MINT, TREASURY, PLATFORM_FEES, ESCROW_HOLDING)

MAX_BATCH_SIZE = 1000
MAX_PAGE_SIZE = 1000
# Satoshi and wei: the smallest units a BTC or ETH balance can be set in.
BTC_PLACES = 8
ETH_PLACES = 18
MAX_AGENT_ID_LENGTH = 128
# 10^12 USDC: far above any real payout, and every sum of such amounts stays inside SQLite's
# signed 64-bit INTEGER.
MAX_AMOUNT_MICROS = 10**18
MAX_EXPIRY_SECONDS = 10 * 365 * 24 * 3600
FEE_DIVISOR = 100
REFERRER_SHARE_PERCENT = 15

_ZERO = Decimal(0)

# Seeded from the OS once: ids must not repeat across restarts, and need no secrecy.
_ID_RANDOM = random.Random(secrets.randbits(128))

# SQLite's historical limit on bound parameters is 999; chunks below it work on every build.
_IN_CHUNK = 900

_SCHEMA = """
CREATE TABLE IF NOT EXISTS accounts (
    agent_id TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    key_hash TEXT UNIQUE,
    balance_micros INTEGER NOT NULL DEFAULT 0,
    btc TEXT NOT NULL DEFAULT '0',
    eth TEXT NOT NULL DEFAULT '0',
    last_tx_id TEXT,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS transactions (
    tx_id TEXT PRIMARY KEY,
    idempotency_key TEXT,
    payer TEXT NOT NULL,
    kind TEXT NOT NULL,
    recipient TEXT,
    amount_micros INTEGER NOT NULL,
    memo TEXT,
    created_at TEXT NOT NULL,
    escrow_id TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS transactions_by_key
    ON transactions (payer, idempotency_key, kind) WHERE idempotency_key IS NOT NULL;
CREATE TABLE IF NOT EXISTS entries (
    tx_id TEXT NOT NULL,
    account TEXT NOT NULL,
    amount_micros INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS escrows (
    escrow_id TEXT PRIMARY KEY,
    payer TEXT NOT NULL,
    idempotency_key TEXT,
    fingerprint TEXT NOT NULL,
    amount_micros INTEGER NOT NULL,
    winners INTEGER NOT NULL,
    eligible_agents TEXT NOT NULL,
    referrer TEXT,
    release_condition TEXT NOT NULL,
    memo TEXT,
    status TEXT NOT NULL,
    remaining_micros INTEGER NOT NULL,
    released_count INTEGER NOT NULL DEFAULT 0,
    lock_tx_id TEXT NOT NULL,
    refund_tx_id TEXT,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    expires_at_epoch REAL NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS escrows_by_key
    ON escrows (payer, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS escrows_by_expiry ON escrows (status, expires_at_epoch);
CREATE TABLE IF NOT EXISTS escrow_releases (
    escrow_id TEXT NOT NULL,
    recipient TEXT NOT NULL,
    tx_id TEXT NOT NULL,
    share_micros INTEGER NOT NULL,
    net_micros INTEGER NOT NULL,
    referrer_fee_micros INTEGER NOT NULL,
    platform_fee_micros INTEGER NOT NULL,
    memo TEXT,
    created_at TEXT NOT NULL,
    PRIMARY KEY (escrow_id, recipient)
);
"""


class LedgerError(Exception):
    """A request the ledger refuses, with a machine-readable code.

    Args:
        code: e.g. ``unknown_agent``, ``insufficient_funds``, ``idempotency_conflict``.
        message: one sentence for a person.
        details: extra JSON-ready fields for the error body, e.g. ``keys``.
    """

    def __init__(self, code: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details


class SandboxClock:
    """The server's clock: real time plus an offset that only moves forward.

    Tests advance it to reach escrow expiry without waiting.
    """

    def __init__(self, base: Callable[[], float] = time.time) -> None:
        self._base = base
        self._offset = 0.0

    @property
    def offset_seconds(self) -> float:
        """How far ahead of real time the clock runs."""
        return self._offset

    def now(self) -> float:
        """Unix seconds on the server's clock."""
        return self._base() + self._offset

    def advance(self, seconds: float) -> None:
        """Moves the clock forward by ``seconds`` (>= 0)."""
        if seconds < 0:
            raise ValueError("the sandbox clock only moves forward")
        self._offset += seconds


@dataclass(frozen=True)
class Caller:
    """The owner of an API key."""

    agent_id: str
    role: str


@dataclass(frozen=True)
class IssuedKey:
    """A treasury key issued by ``Ledger.bootstrap``; ``created_treasury`` on first start."""

    key: str = field(repr=False)
    created_treasury: bool


class TransferIntent(NamedTuple):
    """One parsed item of a batch transfer; ``error`` is set when the item itself is invalid."""

    recipient: str | None
    amount_micros: int | None
    memo: str | None
    idempotency_key: str | None
    error: str | None = None


@dataclass(frozen=True)
class EscrowSpec:
    """A validated escrow creation request."""

    amount_micros: int
    eligible_agents: tuple[str, ...]
    winners: int
    referrer: str | None
    release_condition: Any
    expiry_seconds: Decimal
    memo: str | None

    def fingerprint(self) -> str:
        """A digest of the request, to tell a retry from a different request under one key."""
        canonical = simplejson.dumps(
            {
                "amount_micros": self.amount_micros,
                "eligible_agents": list(self.eligible_agents),
                "winners": self.winners,
                "referrer": self.referrer,
                "release_condition": self.release_condition,
                "expiry_seconds": str(self.expiry_seconds.normalize()),
                "memo": self.memo,
            },
            sort_keys=True,
            use_decimal=True,
        )
        return hashlib.sha256(canonical.encode()).hexdigest()


class _Tx(NamedTuple):
    """A ``transactions`` row, its fields in column order so it is inserted as it is."""

    tx_id: str
    idempotency_key: str | None
    payer: str
    kind: str
    recipient: str | None
    amount_micros: int
    memo: str | None
    created_at: str
    escrow_id: str | None = None


def hash_key(key: str) -> str:
    """The stored form of an API key."""
    return hashlib.sha256(key.encode()).hexdigest()


def new_api_key() -> str:
    """A fresh sandbox API key, ``pf_test_`` and 32 hex digits."""
    return f"pf_test_{secrets.token_hex(16)}"


def new_id(prefix: str) -> str:
    """A new identifier such as ``tx_0193a1b2c3d4`` followed by 16 random hex digits.

    The first 12 hex digits are the milliseconds since the epoch, so ids sort by creation time
    as ULIDs do: SQLite appends each new tx id at the end of the primary-key index instead of
    at a random place in it. A million transfers in 1,000-transfer batches took 14.6 s of
    ledger time so, 20.7 s with random ids, and the random ids grew slower as the table grew.
    The random part only has to be unique, not secret.
    """
    return f"{prefix}_{time.time_ns() // 1_000_000:012x}{_ID_RANDOM.getrandbits(64):016x}"


def iso_utc(timestamp: float) -> str:
    """Unix seconds as ISO 8601 in UTC with milliseconds, e.g. ``2026-01-02T03:04:05.678Z``."""
    text = datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def plain_decimal(value: Decimal) -> Decimal:
    """``value`` without trailing zeros, and without an exponent where str() allows it."""
    # The default context keeps 28 digits and an ETH balance can have 38, so normalize() runs
    # with as many digits as the value has and rounds nothing.
    with localcontext(prec=max(len(value.as_tuple().digits), 1)):
        # normalize() alone turns 100 into 1E+2; re-reading the fixed-point text keeps it 100.
        return Decimal(format(value.normalize(), "f"))


def wire_usdc(micros: int) -> Decimal:
    """Micro-USDC as the exact decimal written on the wire (``2.5``, ``100``, ``0.000001``)."""
    # Built from the integer digits: a balances page writes thousands of these, and this is
    # several times faster than dividing and normalizing a Decimal.
    whole, fraction = divmod(abs(micros), MICROS_PER_USDC)
    sign = "-" if micros < 0 else ""
    return Decimal(f"{sign}{whole}.{fraction:06d}".rstrip("0").rstrip("."))


def _wire_decimal(text: str) -> Decimal:
    """A stored BTC or ETH amount for the wire; nearly all of them are ``0``."""
    return _ZERO if text == "0" else plain_decimal(Decimal(text))


def parse_amount(value: Any) -> int:
    """Reads a wire amount into micro-USDC.

    Args:
        value: the parsed JSON value; only a JSON number (int or Decimal) is accepted.

    Returns:
        The amount in micro-USDC, > 0.

    Raises:
        LedgerError: ``invalid_amount`` for a string, bool, null, a non-positive value, more
            than six decimal places, or an amount above ``MAX_AMOUNT_MICROS``.
    """
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        raise LedgerError("invalid_amount", f"amount_usdc must be a JSON number, not {value!r}")
    try:
        micros = to_micros(Decimal(value))
    except (InvalidAmountError, InvalidOperation) as exc:
        raise LedgerError(
            "invalid_amount", f"amount_usdc is not an exact USDC amount: {value}"
        ) from exc
    if micros <= 0:
        raise LedgerError("invalid_amount", f"amount_usdc must be > 0, not {value}")
    if micros > MAX_AMOUNT_MICROS:
        raise LedgerError("invalid_amount", f"amount_usdc is too large: {value}")
    return micros


def parse_crypto_amount(value: Any, name: str, places: int) -> Decimal | None:
    """Reads a BTC or ETH balance from a request body; None when the field is absent.

    Raises:
        LedgerError: ``invalid_amount`` for anything but a JSON number that is finite, not
            negative, and has at most ``places`` decimal places.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        raise LedgerError("invalid_amount", f"{name} must be a JSON number, not {value!r}")
    amount = Decimal(value)
    if not amount.is_finite() or amount < 0:
        raise LedgerError("invalid_amount", f"{name} must be a finite number >= 0, not {value}")
    if plain_decimal(amount).as_tuple().exponent < -places:
        raise LedgerError("invalid_amount", f"{name} has more than {places} decimal places")
    return amount


def parse_transfer(item: Any) -> TransferIntent:
    """Reads one item of a batch transfer, recording (not raising) what is wrong with it."""
    if not isinstance(item, dict):
        return TransferIntent(None, None, None, None, error="invalid_request")
    recipient = item.get("recipient_agent_id")
    key = item.get("idempotency_key")
    memo = item.get("memo")
    try:
        amount: int | None = parse_amount(item.get("amount_usdc"))
        amount_error = None
    except LedgerError as exc:
        amount, amount_error = None, exc.code

    recipient = recipient if isinstance(recipient, str) else None
    key = key if isinstance(key, str) and key else None
    error = None
    if key is None:
        error = "missing_idempotency_key"
    elif amount_error is not None:
        error = amount_error
    elif recipient is None:
        error = "unknown_agent"
    elif memo is not None and not isinstance(memo, str):
        error = "invalid_request"
    return TransferIntent(recipient, amount, memo, key, error=error)


def parse_escrow_spec(body: dict[str, Any]) -> EscrowSpec:
    """Validates the body of ``POST /escrow/create``.

    Raises:
        LedgerError: ``invalid_request`` or ``invalid_amount`` naming the first problem.
    """
    amount = parse_amount(body.get("amount_usdc"))

    eligible = body.get("eligible_agents")
    if (
        not isinstance(eligible, list)
        or not eligible
        or not all(isinstance(a, str) and a for a in eligible)
    ):
        raise LedgerError("invalid_request", "eligible_agents must be a non-empty list of ids")
    if len(set(eligible)) != len(eligible):
        raise LedgerError("invalid_request", "eligible_agents lists an agent twice")

    winners = body.get("winners", 1)
    if isinstance(winners, bool) or not isinstance(winners, int) or winners < 1:
        raise LedgerError("invalid_request", f"winners must be an integer >= 1, not {winners!r}")
    if winners > len(eligible):
        raise LedgerError("invalid_request", "winners exceeds the number of eligible agents")
    if amount % winners:
        raise LedgerError(
            "invalid_amount",
            f"amount_usdc {wire_usdc(amount)} does not split into {winners} equal shares to the "
            "micro-USDC",
        )

    referrer = body.get("referrer_agent_id")
    if referrer is not None and not (isinstance(referrer, str) and referrer):
        raise LedgerError("invalid_request", "referrer_agent_id must be an agent id or null")

    expiry = body.get("expiry_seconds")
    if isinstance(expiry, bool) or not isinstance(expiry, int | Decimal):
        raise LedgerError("invalid_request", "expiry_seconds must be a number")
    expiry = Decimal(expiry)
    if not expiry.is_finite() or not 0 < expiry <= MAX_EXPIRY_SECONDS:
        raise LedgerError("invalid_request", f"expiry_seconds must be in (0, {MAX_EXPIRY_SECONDS}]")

    memo = body.get("memo")
    if memo is not None and not isinstance(memo, str):
        raise LedgerError("invalid_request", "memo must be a string")

    return EscrowSpec(
        amount_micros=amount,
        eligible_agents=tuple(eligible),
        winners=winners,
        referrer=referrer,
        release_condition=body.get("release_condition"),
        expiry_seconds=expiry,
        memo=memo,
    )


def encode_cursor(agent_id: str) -> str:
    """An opaque page cursor: the last agent id of the page, base64url-encoded."""
    return base64.urlsafe_b64encode(f"a:{agent_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    """The agent id a cursor points after.

    Raises:
        LedgerError: ``invalid_request`` when the cursor was not made by ``encode_cursor``.
    """
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise LedgerError("invalid_request", "cursor is not valid") from exc
    if not text.startswith("a:"):
        raise LedgerError("invalid_request", "cursor is not valid")
    return text[2:]


class Ledger:
    """The sandbox's accounts, transactions and escrows.

    Not thread-safe: the server calls it from its event loop only, which also serializes writes.

    Args:
        path: the SQLite file; created with its tables when missing.
        clock: the server clock, for timestamps and escrow expiry.
    """

    def __init__(self, path: Path | str, clock: SandboxClock | None = None) -> None:
        self.path = Path(path)
        self.clock = clock or SandboxClock()
        self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._conn.row_factory = sqlite3.Row
        # WAL with synchronous=OFF survives a crash of the server process (SQLite hands every
        # commit to the OS before it answers), which is all a sandbox needs; only an OS crash or
        # a power cut could lose the tail. Skipping the fsyncs took the 100K-transfer benchmark's
        # commits from 1.8 s to 0.4 s.
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=OFF")
        self._conn.execute("PRAGMA cache_size=-65536")
        self._conn.executescript(_SCHEMA)

    def close(self) -> None:
        """Closes the database connection."""
        self._conn.close()

    # -- setup and keys ---------------------------------------------------------------------

    def bootstrap(self, treasury_micros: int, key_file: Path) -> IssuedKey | None:
        """Creates the system accounts and a funded treasury on first start.

        Later starts change nothing, unless ``key_file`` is gone: then a new treasury key
        replaces the old one, since only its hash was kept.

        Args:
            treasury_micros: what the mint gives the treasury on first start.
            key_file: where the treasury key is written, mode 0600.

        Returns:
            The new treasury key when one was issued, else None.
        """
        key = new_api_key()
        created = False
        with self._write() as cur:
            row = cur.execute("SELECT 1 FROM accounts WHERE agent_id = ?", (TREASURY,)).fetchone()
            if row is not None and key_file.exists():
                return None
            if row is None:
                now = iso_utc(self.clock.now())
                cur.executemany(
                    "INSERT INTO accounts (agent_id, role, key_hash, created_at) "
                    "VALUES (?, ?, ?, ?)",
                    [
                        (MINT, "system", None, now),
                        (PLATFORM_FEES, "system", None, now),
                        (ESCROW_HOLDING, "system", None, now),
                        (TREASURY, "treasury", hash_key(key), now),
                    ],
                )
                if treasury_micros > 0:
                    self._mint(cur, TREASURY, treasury_micros, "initial treasury funding")
                created = True
            else:
                cur.execute(
                    "UPDATE accounts SET key_hash = ? WHERE agent_id = ?", (hash_key(key), TREASURY)
                )

        _write_secret(key_file, key)
        return IssuedKey(key=key, created_treasury=created)

    def authenticate(self, key: str) -> Caller | None:
        """The owner of an API key, or None for an unknown key."""
        row = self._conn.execute(
            "SELECT agent_id, role FROM accounts WHERE key_hash = ?", (hash_key(key),)
        ).fetchone()
        return None if row is None else Caller(row["agent_id"], row["role"])

    def register_agents(self, agent_ids: Sequence[str]) -> dict[str, str]:
        """Creates agent accounts that do not exist yet; existing ones are left alone.

        Args:
            agent_ids: ids of 1 to ``MAX_AGENT_ID_LENGTH`` characters; duplicates are ignored.

        Returns:
            The API key of each newly created agent, in request order.

        Raises:
            LedgerError: ``invalid_request`` for a malformed id or a system account name.
        """
        bad = [
            a
            for a in agent_ids
            if not isinstance(a, str) or not 0 < len(a) <= MAX_AGENT_ID_LENGTH or a.strip() != a
        ]
        if bad:
            raise LedgerError("invalid_request", f"invalid agent ids: {bad[:5]!r}")
        unique = list(dict.fromkeys(agent_ids))
        reserved = [a for a in unique if a in SYSTEM_ACCOUNTS]
        if reserved:
            raise LedgerError("invalid_request", f"reserved account names: {reserved!r}")

        with self._write() as cur:
            existing = self._existing(cur, unique, role=None)
            keys = {a: new_api_key() for a in unique if a not in existing}
            now = iso_utc(self.clock.now())
            cur.executemany(
                "INSERT INTO accounts (agent_id, role, key_hash, created_at) "
                "VALUES (?, 'agent', ?, ?)",
                ((agent_id, hash_key(key), now) for agent_id, key in keys.items()),
            )
        return keys

    def fund(self, account: str, micros: int) -> dict[str, Any]:
        """Mints ``micros`` into an agent or the treasury (tests and demos only).

        Raises:
            LedgerError: ``unknown_agent`` when the account does not exist or is a system one.
        """
        with self._write() as cur:
            row = cur.execute("SELECT role FROM accounts WHERE agent_id = ?", (account,)).fetchone()
            if row is None or row["role"] == "system":
                raise LedgerError("unknown_agent", f"no such agent: {account!r}")
            tx = self._mint(cur, account, micros, "sandbox funding")
            balance = self._balance(cur, account)
        return {
            "tx_id": tx.tx_id,
            "agent_id": account,
            "amount_usdc": wire_usdc(micros),
            "balance_usdc": wire_usdc(balance),
        }

    def set_crypto_balances(
        self, account: str, btc: Decimal | None, eth: Decimal | None
    ) -> dict[str, Any]:
        """Sets an agent's BTC and ETH holdings outright (tests and benchmarks only).

        Only USDC moves through the double-entry ledger; BTC and ETH are reported balances, so
        setting them posts no transaction and leaves ``last_tx_id`` as it was.

        Args:
            account: the agent.
            btc: the new BTC balance, or None to keep the current one.
            eth: the new ETH balance, or None to keep the current one.

        Raises:
            LedgerError: ``unknown_agent`` when the account is not an agent.
        """
        with self._write() as cur:
            row = cur.execute(
                "SELECT role, btc, eth FROM accounts WHERE agent_id = ?", (account,)
            ).fetchone()
            if row is None or row["role"] != "agent":
                raise LedgerError("unknown_agent", f"no such agent: {account!r}")
            stored = {
                "btc": row["btc"] if btc is None else str(plain_decimal(btc)),
                "eth": row["eth"] if eth is None else str(plain_decimal(eth)),
            }
            cur.execute(
                "UPDATE accounts SET btc = ?, eth = ? WHERE agent_id = ?",
                (stored["btc"], stored["eth"], account),
            )
        return {
            "agent_id": account,
            "btc": _wire_decimal(stored["btc"]),
            "eth": _wire_decimal(stored["eth"]),
        }

    # -- transfers --------------------------------------------------------------------------

    def batch_transfer(self, payer: str, intents: Sequence[TransferIntent]) -> list[dict[str, Any]]:
        """Moves money from ``payer`` to each recipient, all in one SQLite transaction.

        Items are taken in order; each one either succeeds, replays an earlier success under
        the same key, or fails on its own without stopping the others.

        Returns:
            One result per intent, in order.

        Raises:
            LedgerError: ``idempotency_conflict`` with ``keys`` when a key is already bound (or
                bound earlier in the batch) to a different recipient or amount; nothing of the
                batch is committed then.
        """
        valid = [i for i in intents if i.error is None]
        with self._write() as cur:
            known = self._existing(cur, {i.recipient for i in valid}, role="agent")
            bound = self._bound_transfers(cur, payer, {i.idempotency_key for i in valid})

            first_seen: dict[str, tuple[str | None, int | None]] = {
                key: (row["recipient"], row["amount_micros"]) for key, row in bound.items()
            }
            conflicts: list[str] = []
            for intent in valid:
                if intent.recipient not in known:
                    continue
                content = (intent.recipient, intent.amount_micros)
                seen = first_seen.setdefault(intent.idempotency_key, content)
                if seen != content and intent.idempotency_key not in conflicts:
                    conflicts.append(intent.idempotency_key)
            if conflicts:
                raise LedgerError(
                    "idempotency_conflict",
                    f"{len(conflicts)} idempotency key(s) already used with a different "
                    "recipient or amount; nothing in this request was committed",
                    keys=conflicts,
                )

            balance = self._balance(cur, payer)
            now = iso_utc(self.clock.now())
            txs: list[_Tx] = []
            entries: list[tuple[str, str, int]] = []
            results: list[dict[str, Any]] = []
            for intent in intents:
                error = intent.error
                if error is None and intent.recipient not in known:
                    error = "unknown_agent"
                if error is not None:
                    results.append(_failed(intent, error))
                    continue

                prior = bound.get(intent.idempotency_key)
                if prior is not None:
                    results.append(_transfer_result(prior, intent.idempotency_key, replayed=True))
                    continue
                if intent.amount_micros > balance:
                    results.append(_failed(intent, "insufficient_funds"))
                    continue

                balance -= intent.amount_micros
                tx = _Tx(
                    new_id("tx"),
                    intent.idempotency_key,
                    payer,
                    "transfer",
                    intent.recipient,
                    intent.amount_micros,
                    intent.memo,
                    now,
                )
                txs.append(tx)
                entries.append((tx.tx_id, payer, -tx.amount_micros))
                entries.append((tx.tx_id, tx.recipient, tx.amount_micros))
                # A later duplicate of this key in the same batch replays this transfer.
                bound[tx.idempotency_key] = {
                    "tx_id": tx.tx_id,
                    "recipient": tx.recipient,
                    "amount_micros": tx.amount_micros,
                }
                results.append(_transfer_result(bound[tx.idempotency_key], tx.idempotency_key))

            self._post(cur, txs, entries)
        return results

    def transactions(self, payer: str, idempotency_key: str) -> list[dict[str, Any]]:
        """The payer's transactions carrying ``idempotency_key`` (for reconciliation)."""
        rows = self._conn.execute(
            "SELECT * FROM transactions WHERE payer = ? AND idempotency_key = ? "
            "ORDER BY created_at, rowid",
            (payer, idempotency_key),
        ).fetchall()
        return [
            {
                "tx_id": row["tx_id"],
                "idempotency_key": row["idempotency_key"],
                "kind": row["kind"],
                "recipient_agent_id": row["recipient"],
                "amount_usdc": wire_usdc(row["amount_micros"]),
                "memo": row["memo"],
                "created_at": row["created_at"],
                "escrow_id": row["escrow_id"],
            }
            for row in rows
        ]

    # -- balances ---------------------------------------------------------------------------

    def balances(self, caller: Caller, limit: int, cursor: str | None) -> dict[str, Any]:
        """One page of agent balances, ordered by agent id.

        Pages are keyed on the last agent id seen, so agents registered between two calls
        never make a page repeat or skip an agent that already existed.

        Args:
            caller: an agent sees only its own row; the treasury sees every agent.
            limit: page size, 1 to ``MAX_PAGE_SIZE``.
            cursor: ``next_cursor`` of the previous page, or None for the first.
        """
        if caller.role == "agent":
            rows = self._conn.execute(
                "SELECT * FROM accounts WHERE agent_id = ?", (caller.agent_id,)
            ).fetchall()
            return {"agents": [_balance_row(r) for r in rows], "next_cursor": None}

        after = decode_cursor(cursor) if cursor else ""
        rows = self._conn.execute(
            "SELECT * FROM accounts WHERE role = 'agent' AND agent_id > ? "
            "ORDER BY agent_id LIMIT ?",
            (after, limit + 1),
        ).fetchall()
        more = len(rows) > limit
        rows = rows[:limit]
        next_cursor = encode_cursor(rows[-1]["agent_id"]) if more else None
        return {"agents": [_balance_row(r) for r in rows], "next_cursor": next_cursor}

    # -- escrow -----------------------------------------------------------------------------

    def create_escrow(
        self, payer: str, spec: EscrowSpec, idempotency_key: str | None
    ) -> tuple[dict[str, Any], bool]:
        """Locks ``spec.amount_micros`` of the payer's money in ``escrow_holding``.

        Returns:
            The escrow's state and whether it is a replay of an earlier create under the key.

        Raises:
            LedgerError: ``idempotency_conflict`` (same key, different request),
                ``unknown_agent`` (an eligible agent or the referrer is not registered),
                ``insufficient_funds``.
        """
        fingerprint = spec.fingerprint()
        replay_of = None
        with self._write() as cur:
            if idempotency_key is not None:
                row = cur.execute(
                    "SELECT escrow_id, fingerprint FROM escrows "
                    "WHERE payer = ? AND idempotency_key = ?",
                    (payer, idempotency_key),
                ).fetchone()
                if row is not None and row["fingerprint"] != fingerprint:
                    raise LedgerError(
                        "idempotency_conflict",
                        f"idempotency key {idempotency_key!r} was used for a different escrow",
                        keys=[idempotency_key],
                    )
                if row is not None:
                    replay_of = row["escrow_id"]

            if replay_of is None:
                escrow_id = self._lock_escrow(cur, payer, spec, idempotency_key, fingerprint)

        if replay_of is not None:
            return self.get_escrow(replay_of, Caller(payer, TREASURY)), True
        return self.get_escrow(escrow_id, Caller(payer, TREASURY)), False

    def release_escrow(
        self, payer: str, escrow_id: str, recipient: str, memo: str | None
    ) -> dict[str, Any]:
        """Pays one winner's share of an escrow, minus the fee (see the module docstring).

        Releasing again to the same recipient returns the original result with
        ``replayed=True``.

        Raises:
            LedgerError: ``not_found``, ``not_eligible``, ``escrow_not_locked`` (no winner slot
                left) or ``escrow_expired`` (the escrow expired and was refunded; the refund is
                committed before this is raised).
        """
        failure: LedgerError | None = None
        result: dict[str, Any] | None = None
        with self._write() as cur:
            escrow = self._refund_if_due(cur, self._escrow_row(cur, escrow_id, payer))
            prior = cur.execute(
                "SELECT * FROM escrow_releases WHERE escrow_id = ? AND recipient = ?",
                (escrow_id, recipient),
            ).fetchone()
            if prior is not None:
                result = _release_result(escrow, prior, replayed=True)
            elif recipient not in simplejson.loads(escrow["eligible_agents"]):
                failure = LedgerError(
                    "not_eligible", f"{recipient!r} is not eligible for escrow {escrow_id}"
                )
            elif escrow["status"] == "refunded":
                failure = LedgerError(
                    "escrow_expired",
                    f"escrow {escrow_id} expired at {escrow['expires_at']} and its remaining "
                    f"funds were refunded to {escrow['payer']}; it can no longer be released",
                    expires_at=escrow["expires_at"],
                )
            elif escrow["status"] != "locked":
                failure = LedgerError(
                    "escrow_not_locked",
                    f"escrow {escrow_id} is {escrow['status']}: all {escrow['winners']} winner "
                    "slot(s) are already released",
                )
            else:
                result = self._pay_winner(cur, escrow, recipient, memo)
        # Raised after the block so that a refund made on the way is committed, not rolled back.
        if failure is not None:
            raise failure
        assert result is not None
        return result

    def get_escrow(self, escrow_id: str, caller: Caller) -> dict[str, Any]:
        """The state of an escrow, after refunding it if it has expired.

        The payer sees its escrows; an agent sees those it is eligible for or refers.

        Raises:
            LedgerError: ``not_found``.
        """
        with self._write() as cur:
            row = self._escrow_row(cur, escrow_id, None)
            visible = caller.agent_id == row["payer"] or (
                caller.role == "agent"
                and (
                    caller.agent_id in simplejson.loads(row["eligible_agents"])
                    or caller.agent_id == row["referrer"]
                )
            )
            if not visible:
                raise LedgerError("not_found", f"no escrow {escrow_id!r}")
            row = self._refund_if_due(cur, row)
            return self._escrow_state(cur, row)

    def sweep_expired(self) -> list[str]:
        """Refunds every locked escrow past its expiry; returns their ids."""
        with self._write() as cur:
            rows = cur.execute(
                "SELECT * FROM escrows WHERE status = 'locked' AND expires_at_epoch <= ?",
                (self.clock.now(),),
            ).fetchall()
            for row in rows:
                self._refund_if_due(cur, row)
        return [row["escrow_id"] for row in rows]

    # -- audit ------------------------------------------------------------------------------

    def audit(self) -> dict[str, Any]:
        """Checks the double-entry invariants and reports the system balances."""
        conn = self._conn
        entries_sum = conn.execute(
            "SELECT COALESCE(SUM(amount_micros), 0) FROM entries"
        ).fetchone()[0]
        unbalanced = conn.execute(
            "SELECT COUNT(*) FROM (SELECT tx_id FROM entries GROUP BY tx_id "
            "HAVING SUM(amount_micros) != 0)"
        ).fetchone()[0]
        mismatched = conn.execute(
            "SELECT COUNT(*) FROM accounts a LEFT JOIN "
            "(SELECT account, SUM(amount_micros) AS total FROM entries GROUP BY account) e "
            "ON e.account = a.agent_id WHERE a.balance_micros != COALESCE(e.total, 0)"
        ).fetchone()[0]
        orphans = conn.execute(
            "SELECT COUNT(*) FROM entries WHERE account NOT IN (SELECT agent_id FROM accounts)"
        ).fetchone()[0]
        negative = conn.execute(
            "SELECT COUNT(*) FROM accounts WHERE agent_id != ? AND balance_micros < 0", (MINT,)
        ).fetchone()[0]
        balances_sum = conn.execute(
            "SELECT COALESCE(SUM(balance_micros), 0) FROM accounts"
        ).fetchone()[0]
        locked = conn.execute(
            "SELECT COALESCE(SUM(remaining_micros), 0) FROM escrows WHERE status = 'locked'"
        ).fetchone()[0]
        agents_total, agents = conn.execute(
            "SELECT COALESCE(SUM(balance_micros), 0), COUNT(*) FROM accounts WHERE role = 'agent'"
        ).fetchone()
        transactions = conn.execute("SELECT COUNT(*) FROM transactions").fetchone()[0]
        system = {
            row["agent_id"]: row["balance_micros"]
            for row in conn.execute(
                "SELECT agent_id, balance_micros FROM accounts WHERE agent_id IN (?, ?, ?, ?)",
                SYSTEM_ACCOUNTS,
            )
        }
        return {
            "entries_sum_micros": entries_sum,
            "unbalanced_transactions": unbalanced,
            "mismatched_accounts": mismatched,
            "orphan_entries": orphans,
            "negative_balances": negative,
            "accounts_consistent": mismatched == 0 and orphans == 0 and balances_sum == 0,
            "escrow_consistent": locked == system.get(ESCROW_HOLDING, 0),
            "minted_usdc": wire_usdc(-system.get(MINT, 0)),
            "treasury_usdc": wire_usdc(system.get(TREASURY, 0)),
            "platform_fees_usdc": wire_usdc(system.get(PLATFORM_FEES, 0)),
            "escrow_holding_usdc": wire_usdc(system.get(ESCROW_HOLDING, 0)),
            "agents_usdc": wire_usdc(agents_total),
            "agents": agents,
            "transactions": transactions,
        }

    # -- internals --------------------------------------------------------------------------

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Cursor]:
        cur = self._conn.cursor()
        # IMMEDIATE takes the write lock up front, so reads made inside see what gets written.
        cur.execute("BEGIN IMMEDIATE")
        try:
            yield cur
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        cur.execute("COMMIT")

    def _existing(
        self, cur: sqlite3.Cursor, ids: Iterable[str | None], role: str | None
    ) -> set[str]:
        wanted = [i for i in ids if i is not None]
        found: set[str] = set()
        for start in range(0, len(wanted), _IN_CHUNK):
            chunk = wanted[start : start + _IN_CHUNK]
            marks = ",".join("?" * len(chunk))
            sql = f"SELECT agent_id FROM accounts WHERE agent_id IN ({marks})"
            params: list[Any] = list(chunk)
            if role is not None:
                sql += " AND role = ?"
                params.append(role)
            found.update(row[0] for row in cur.execute(sql, params))
        return found

    def _bound_transfers(
        self, cur: sqlite3.Cursor, payer: str, keys: Iterable[str | None]
    ) -> dict[str, dict[str, Any]]:
        wanted = [k for k in keys if k is not None]
        bound: dict[str, dict[str, Any]] = {}
        for start in range(0, len(wanted), _IN_CHUNK):
            chunk = wanted[start : start + _IN_CHUNK]
            marks = ",".join("?" * len(chunk))
            rows = cur.execute(
                "SELECT idempotency_key, tx_id, recipient, amount_micros FROM transactions "
                f"WHERE payer = ? AND kind = 'transfer' AND idempotency_key IN ({marks})",
                [payer, *chunk],
            )
            for row in rows:
                bound[row["idempotency_key"]] = {
                    "tx_id": row["tx_id"],
                    "recipient": row["recipient"],
                    "amount_micros": row["amount_micros"],
                }
        return bound

    def _balance(self, cur: sqlite3.Cursor, account: str) -> int:
        row = cur.execute(
            "SELECT balance_micros FROM accounts WHERE agent_id = ?", (account,)
        ).fetchone()
        return 0 if row is None else row[0]

    def _post(
        self, cur: sqlite3.Cursor, txs: Sequence[_Tx], entries: Sequence[tuple[str, str, int]]
    ) -> None:
        """Writes transactions with their entries and moves the cached balances with them."""
        totals: dict[str, int] = {}
        deltas: dict[str, int] = {}
        last_tx: dict[str, str] = {}
        for tx_id, account, micros in entries:
            totals[tx_id] = totals.get(tx_id, 0) + micros
            deltas[account] = deltas.get(account, 0) + micros
            last_tx[account] = tx_id
        unbalanced = [tx_id for tx_id, total in totals.items() if total != 0]
        if unbalanced:
            raise RuntimeError(f"entries of {unbalanced[:3]} do not sum to zero")

        cur.executemany(
            "INSERT INTO transactions (tx_id, idempotency_key, payer, kind, recipient, "
            "amount_micros, memo, created_at, escrow_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            txs,
        )
        cur.executemany(
            "INSERT INTO entries (tx_id, account, amount_micros) VALUES (?, ?, ?)", entries
        )
        cur.executemany(
            "UPDATE accounts SET balance_micros = balance_micros + ?, last_tx_id = ? "
            "WHERE agent_id = ?",
            [(deltas[account], last_tx[account], account) for account in deltas],
        )

    def _mint(self, cur: sqlite3.Cursor, account: str, micros: int, memo: str) -> _Tx:
        tx = _Tx(
            tx_id=new_id("tx"),
            idempotency_key=None,
            payer=MINT,
            kind="mint",
            recipient=account,
            amount_micros=micros,
            memo=memo,
            created_at=iso_utc(self.clock.now()),
        )
        self._post(cur, [tx], [(tx.tx_id, MINT, -micros), (tx.tx_id, account, micros)])
        return tx

    def _lock_escrow(
        self,
        cur: sqlite3.Cursor,
        payer: str,
        spec: EscrowSpec,
        idempotency_key: str | None,
        fingerprint: str,
    ) -> str:
        named = [*spec.eligible_agents, *([spec.referrer] if spec.referrer else [])]
        known = self._existing(cur, named, role="agent")
        unknown = [a for a in dict.fromkeys(named) if a not in known]
        if unknown:
            raise LedgerError(
                "unknown_agent", f"agents not registered: {', '.join(unknown)}", agents=unknown
            )
        balance = self._balance(cur, payer)
        if spec.amount_micros > balance:
            raise LedgerError(
                "insufficient_funds",
                f"escrow of {wire_usdc(spec.amount_micros)} USDC exceeds the payer's balance of "
                f"{wire_usdc(balance)} USDC",
            )

        now = self.clock.now()
        expires = now + float(spec.expiry_seconds)
        escrow_id = new_id("esc")
        tx = _Tx(
            tx_id=new_id("tx"),
            idempotency_key=idempotency_key,
            payer=payer,
            kind="escrow_lock",
            recipient=ESCROW_HOLDING,
            amount_micros=spec.amount_micros,
            memo=spec.memo,
            created_at=iso_utc(now),
            escrow_id=escrow_id,
        )
        self._post(
            cur,
            [tx],
            [
                (tx.tx_id, payer, -spec.amount_micros),
                (tx.tx_id, ESCROW_HOLDING, spec.amount_micros),
            ],
        )
        cur.execute(
            "INSERT INTO escrows (escrow_id, payer, idempotency_key, fingerprint, amount_micros, "
            "winners, eligible_agents, referrer, release_condition, memo, status, "
            "remaining_micros, lock_tx_id, created_at, expires_at, expires_at_epoch) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'locked', ?, ?, ?, ?, ?)",
            (
                escrow_id,
                payer,
                idempotency_key,
                fingerprint,
                spec.amount_micros,
                spec.winners,
                simplejson.dumps(list(spec.eligible_agents)),
                spec.referrer,
                simplejson.dumps(spec.release_condition, use_decimal=True),
                spec.memo,
                spec.amount_micros,
                tx.tx_id,
                iso_utc(now),
                iso_utc(expires),
                expires,
            ),
        )
        return escrow_id

    def _escrow_row(self, cur: sqlite3.Cursor, escrow_id: str, payer: str | None) -> sqlite3.Row:
        row = cur.execute("SELECT * FROM escrows WHERE escrow_id = ?", (escrow_id,)).fetchone()
        # Another payer's escrow is reported as missing rather than forbidden, to not leak ids.
        if row is None or (payer is not None and row["payer"] != payer):
            raise LedgerError("not_found", f"no escrow {escrow_id!r}")
        return row

    def _refund_if_due(self, cur: sqlite3.Cursor, row: sqlite3.Row) -> sqlite3.Row:
        """Refunds a locked escrow past its expiry; returns the row as it is afterwards."""
        if row["status"] != "locked" or self.clock.now() < row["expires_at_epoch"]:
            return row
        remaining = row["remaining_micros"]
        tx = _Tx(
            tx_id=new_id("tx"),
            idempotency_key=None,
            payer=row["payer"],
            kind="refund",
            recipient=row["payer"],
            amount_micros=remaining,
            memo=f"refund of expired escrow {row['escrow_id']}",
            created_at=iso_utc(self.clock.now()),
            escrow_id=row["escrow_id"],
        )
        self._post(
            cur, [tx], [(tx.tx_id, ESCROW_HOLDING, -remaining), (tx.tx_id, row["payer"], remaining)]
        )
        cur.execute(
            "UPDATE escrows SET status = 'refunded', remaining_micros = 0, refund_tx_id = ? "
            "WHERE escrow_id = ?",
            (tx.tx_id, row["escrow_id"]),
        )
        return self._escrow_row(cur, row["escrow_id"], None)

    def _pay_winner(
        self, cur: sqlite3.Cursor, escrow: sqlite3.Row, recipient: str, memo: str | None
    ) -> dict[str, Any]:
        share = escrow["amount_micros"] // escrow["winners"]
        fee = share // FEE_DIVISOR
        referrer = escrow["referrer"]
        referrer_fee = fee * REFERRER_SHARE_PERCENT // 100 if referrer else 0
        platform_fee = fee - referrer_fee
        net = share - fee

        now = iso_utc(self.clock.now())
        tx = _Tx(
            tx_id=new_id("tx"),
            idempotency_key=None,
            payer=escrow["payer"],
            kind="escrow_release",
            recipient=recipient,
            amount_micros=share,
            memo=memo,
            created_at=now,
            escrow_id=escrow["escrow_id"],
        )
        entries = [(tx.tx_id, ESCROW_HOLDING, -share), (tx.tx_id, recipient, net)]
        if referrer_fee:
            entries.append((tx.tx_id, referrer, referrer_fee))
        if platform_fee:
            entries.append((tx.tx_id, PLATFORM_FEES, platform_fee))
        self._post(cur, [tx], entries)

        released = escrow["released_count"] + 1
        status = "released" if released == escrow["winners"] else "locked"
        cur.execute(
            "UPDATE escrows SET released_count = ?, remaining_micros = remaining_micros - ?, "
            "status = ? WHERE escrow_id = ?",
            (released, share, status, escrow["escrow_id"]),
        )
        cur.execute(
            "INSERT INTO escrow_releases (escrow_id, recipient, tx_id, share_micros, net_micros, "
            "referrer_fee_micros, platform_fee_micros, memo, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                escrow["escrow_id"],
                recipient,
                tx.tx_id,
                share,
                net,
                referrer_fee,
                platform_fee,
                memo,
                now,
            ),
        )
        escrow = self._escrow_row(cur, escrow["escrow_id"], None)
        release = cur.execute(
            "SELECT * FROM escrow_releases WHERE escrow_id = ? AND recipient = ?",
            (escrow["escrow_id"], recipient),
        ).fetchone()
        return _release_result(escrow, release, replayed=False)

    def _escrow_state(self, cur: sqlite3.Cursor, row: sqlite3.Row) -> dict[str, Any]:
        releases = cur.execute(
            "SELECT * FROM escrow_releases WHERE escrow_id = ? ORDER BY created_at, rowid",
            (row["escrow_id"],),
        ).fetchall()
        return {
            "escrow_id": row["escrow_id"],
            "status": row["status"],
            "payer": row["payer"],
            "amount_usdc": wire_usdc(row["amount_micros"]),
            "remaining_usdc": wire_usdc(row["remaining_micros"]),
            "winners": row["winners"],
            "eligible_agents": simplejson.loads(row["eligible_agents"]),
            "referrer_agent_id": row["referrer"],
            "release_condition": simplejson.loads(row["release_condition"], use_decimal=True),
            "memo": row["memo"],
            "idempotency_key": row["idempotency_key"],
            "created_at": row["created_at"],
            "expires_at": row["expires_at"],
            "lock_tx_id": row["lock_tx_id"],
            "refund_tx_id": row["refund_tx_id"],
            "released": [
                {
                    "recipient_agent_id": r["recipient"],
                    "tx_id": r["tx_id"],
                    "amount_usdc": wire_usdc(r["net_micros"]),
                    "fee_usdc": wire_usdc(r["referrer_fee_micros"] + r["platform_fee_micros"]),
                    "referrer_fee_usdc": wire_usdc(r["referrer_fee_micros"]),
                    "platform_fee_usdc": wire_usdc(r["platform_fee_micros"]),
                    "created_at": r["created_at"],
                }
                for r in releases
            ],
        }


def _failed(intent: TransferIntent, error: str) -> dict[str, Any]:
    return {
        "agent_id": intent.recipient,
        "idempotency_key": intent.idempotency_key,
        "success": False,
        "tx_id": None,
        "error": error,
        "amount_usdc": None if intent.amount_micros is None else wire_usdc(intent.amount_micros),
        "replayed": False,
    }


def _transfer_result(
    bound: dict[str, Any], idempotency_key: str | None, *, replayed: bool = False
) -> dict[str, Any]:
    return {
        "agent_id": bound["recipient"],
        "idempotency_key": idempotency_key,
        "success": True,
        "tx_id": bound["tx_id"],
        "error": None,
        "amount_usdc": wire_usdc(bound["amount_micros"]),
        "replayed": replayed,
    }


def _balance_row(row: sqlite3.Row) -> dict[str, Any]:
    return {
        "agent_id": row["agent_id"],
        "usdc": wire_usdc(row["balance_micros"]),
        "btc": _wire_decimal(row["btc"]),
        "eth": _wire_decimal(row["eth"]),
        "last_tx_id": row["last_tx_id"],
    }


def _release_result(escrow: sqlite3.Row, release: sqlite3.Row, *, replayed: bool) -> dict[str, Any]:
    return {
        "tx_id": release["tx_id"],
        "escrow_id": escrow["escrow_id"],
        "recipient_agent_id": release["recipient"],
        "amount_usdc": wire_usdc(release["net_micros"]),
        "share_usdc": wire_usdc(release["share_micros"]),
        "fee_usdc": wire_usdc(release["referrer_fee_micros"] + release["platform_fee_micros"]),
        "referrer_agent_id": escrow["referrer"],
        "referrer_fee_usdc": wire_usdc(release["referrer_fee_micros"]),
        "platform_fee_usdc": wire_usdc(release["platform_fee_micros"]),
        "status": escrow["status"],
        "created_at": release["created_at"],
        "replayed": replayed,
    }


def _write_secret(path: Path, text: str) -> None:
    """Writes ``text`` to ``path`` readable by the owner only, replacing any old file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text + "\n")
    # The mode is set again in case the umask or an older file left it wider.
    os.chmod(temp, 0o600)
    os.replace(temp, path)
