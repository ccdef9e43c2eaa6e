"""Bounties: bonuses locked in escrow for agents whose MLflow run reaches a target.

Bounties are declared in one file under PF_HOME, ``bounties.yaml`` (or ``bounties.json``;
``PF_BOUNTIES_FILE`` names another), as a list of entries (a top-level list, or a mapping whose
``bounties`` key holds the list)::

    - bounty_id: digits-f1
      experiment: digits-finetune
      metric: eval/f1
      threshold: 0.93
      direction: above        # or below (e.g. a loss); reaching the threshold counts
      rule: any               # any: the first logged value that crosses; final: the last step's
      agent_tag: pf.agent_id  # the run tag that names the agent
      eligible_agents: [agent-a, agent-b, agent-c]
      amount_usdc: 10
      winners: 1
      expiry: 24h             # seconds, or a number with s, m, h or d
      referrer_agent_id: agent-ref   # optional: earns 15% of the 1% fee

Amounts and thresholds are read as exact decimals from the file's text: a YAML or JSON number
never passes through a float.
"""

from __future__ import annotations

import fcntl
import os
import re
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import simplejson
import yaml

from pf_platform.payouts.money import InvalidAmountError, to_micros, to_usdc
from pf_platform.resources.payments.models import wire_amount
from pf_platform.settings import pf_home

ABOVE = "above"
BELOW = "below"
DIRECTIONS = (ABOVE, BELOW)
ANY = "any"
FINAL = "final"
RULES = (ANY, FINAL)
DEFAULT_AGENT_TAG = "pf.agent_id"
BOUNTIES_FILE_ENV = "PF_BOUNTIES_FILE"

# The id is a Dagster partition key, part of run keys ("<bounty>:<agent>") and of the escrow's
# idempotency key, so it keeps to characters that are safe in all three.
BOUNTY_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
# The sandbox's ceiling; the live API's is not lower.
MAX_EXPIRY_SECONDS = 10 * 365 * 24 * 3600
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"(\d+)\s*([smhd])")
_REQUIRED = (
    "bounty_id",
    "experiment",
    "metric",
    "threshold",
    "eligible_agents",
    "amount_usdc",
    "expiry",
)
_FIELDS = (
    "bounty_id",
    "experiment",
    "metric",
    "threshold",
    "direction",
    "rule",
    "agent_tag",
    "eligible_agents",
    "amount_usdc",
    "winners",
    "expiry",
    "referrer_agent_id",
    "memo",
)


class BountyError(ValueError):
    """A bounty declaration that cannot be used as written."""


@dataclass(frozen=True)
class Bounty:
    """One declared bounty.

    Attributes:
        bounty_id: unique name; the Dagster partition key of its escrow.
        experiment: MLflow experiment whose runs compete.
        metric: exact metric key, e.g. ``eval/f1`` (``eval-f1`` is another metric).
        threshold: the target, an exact decimal.
        direction: ``above`` (value >= threshold wins) or ``below`` (value <= threshold).
        rule: ``any`` (the first crossing counts even if later values fall back) or ``final``
            (the value at the highest step of a finished run).
        agent_tag: the MLflow run tag whose value is the agent id.
        eligible_agents: the agents that may win.
        amount_usdc: the total locked; each winner's share is ``amount_usdc / winners``.
        winners: how many agents win a share.
        expiry_seconds: after this long without all winners the remainder goes back to the payer.
        referrer_agent_id: optional agent that earns 15% of the platform fee.
        memo: text stored with the escrow.
    """

    bounty_id: str
    experiment: str
    metric: str
    threshold: Decimal
    eligible_agents: tuple[str, ...]
    amount_usdc: Decimal
    expiry_seconds: int
    direction: str = ABOVE
    rule: str = ANY
    agent_tag: str = DEFAULT_AGENT_TAG
    winners: int = 1
    referrer_agent_id: str | None = None
    memo: str = ""

    def __post_init__(self) -> None:
        _check(self)

    @property
    def idempotency_key(self) -> str:
        """The escrow's creation key: the same bounty always locks the same escrow."""
        return f"pf-escrow:{self.bounty_id}"

    @property
    def share_usdc(self) -> Decimal:
        """What one winner's release is worth before the fee."""
        return self.amount_usdc / self.winners

    def release_condition(self) -> dict[str, Any]:
        """The condition stored with the escrow on the API, so the payee can read the terms."""
        return {
            "source": "mlflow",
            "experiment": self.experiment,
            "metric": self.metric,
            "threshold": self.threshold,
            "direction": self.direction,
            "rule": self.rule,
            "agent_tag": self.agent_tag,
        }

    def describe(self) -> str:
        """One line for logs and memos, e.g. ``eval/f1 above 0.93 (any step)``."""
        step = "any step" if self.rule == ANY else "final step"
        return f"{self.metric} {self.direction} {self.threshold} ({step})"

    def to_record(self) -> dict[str, Any]:
        """The entry as written to the bounties file; amounts as text so they stay exact."""
        record: dict[str, Any] = {
            "bounty_id": self.bounty_id,
            "experiment": self.experiment,
            "metric": self.metric,
            "threshold": str(self.threshold),
            "direction": self.direction,
            "rule": self.rule,
            "agent_tag": self.agent_tag,
            "eligible_agents": list(self.eligible_agents),
            "amount_usdc": str(wire_amount(self.amount_usdc)),
            "winners": self.winners,
            "expiry": format_duration(self.expiry_seconds),
        }
        if self.referrer_agent_id is not None:
            record["referrer_agent_id"] = self.referrer_agent_id
        if self.memo:
            record["memo"] = self.memo
        return record

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Bounty:
        """Reads one entry of the bounties file.

        Raises:
            BountyError: a field is missing, unknown or out of range; the message names it.
        """
        if not isinstance(record, Mapping):
            raise BountyError(f"a bounty must be a mapping of fields, not {record!r}")
        name = record.get("bounty_id", "?")
        unknown = sorted(set(record) - set(_FIELDS))
        if unknown:
            raise BountyError(f"bounty {name!r}: unknown field(s) {', '.join(map(str, unknown))}")
        missing = [field for field in _REQUIRED if record.get(field) is None]
        if missing:
            raise BountyError(f"bounty {name!r}: missing {', '.join(missing)}")

        agents = record["eligible_agents"]
        if isinstance(agents, str):
            agents = [a.strip() for a in agents.split(",")]
        if not isinstance(agents, list):
            raise BountyError(f"bounty {name!r}: eligible_agents must be a list of agent ids")
        winners = record.get("winners", 1)
        if isinstance(winners, bool) or not isinstance(winners, int):
            raise BountyError(f"bounty {name!r}: winners must be a whole number, not {winners!r}")
        return cls(
            bounty_id=_text(record, "bounty_id"),
            experiment=_text(record, "experiment"),
            metric=_text(record, "metric"),
            threshold=_decimal(record["threshold"], f"bounty {name!r}: threshold"),
            eligible_agents=tuple(agents),
            amount_usdc=_amount(record["amount_usdc"], name),
            expiry_seconds=parse_duration(record["expiry"]),
            direction=_text(record, "direction", ABOVE),
            rule=_text(record, "rule", ANY),
            agent_tag=_text(record, "agent_tag", DEFAULT_AGENT_TAG),
            winners=winners,
            referrer_agent_id=(
                None
                if record.get("referrer_agent_id") is None
                else _text(record, "referrer_agent_id")
            ),
            memo=_text(record, "memo", ""),
        )


def _check(bounty: Bounty) -> None:
    name = bounty.bounty_id
    if not isinstance(name, str) or not BOUNTY_ID_PATTERN.fullmatch(name):
        raise BountyError(
            f"bounty id {name!r} must be 1-64 letters, digits, '_', '.' or '-', starting with a "
            "letter or digit"
        )
    if not bounty.experiment or not bounty.metric:
        raise BountyError(f"bounty {name!r}: experiment and metric must not be empty")
    if not bounty.threshold.is_finite():
        raise BountyError(f"bounty {name!r}: threshold must be a finite number")
    if bounty.direction not in DIRECTIONS:
        raise BountyError(f"bounty {name!r}: direction must be above or below")
    if bounty.rule not in RULES:
        raise BountyError(f"bounty {name!r}: rule must be any or final")
    if not bounty.agent_tag:
        raise BountyError(f"bounty {name!r}: agent_tag must name an MLflow run tag")
    agents = bounty.eligible_agents
    if not agents or not all(isinstance(a, str) and a for a in agents):
        raise BountyError(f"bounty {name!r}: eligible_agents must be a non-empty list of ids")
    if len(set(agents)) != len(agents):
        raise BountyError(f"bounty {name!r}: eligible_agents lists an agent twice")
    if not 1 <= bounty.winners <= len(agents):
        raise BountyError(f"bounty {name!r}: winners must be between 1 and {len(agents)}")
    if bounty.amount_usdc <= 0:
        raise BountyError(f"bounty {name!r}: amount_usdc must be positive")
    if to_micros(bounty.amount_usdc) % bounty.winners:
        raise BountyError(
            f"bounty {name!r}: {bounty.amount_usdc} USDC does not split into {bounty.winners} "
            "equal shares to the micro-USDC"
        )
    if not 0 < bounty.expiry_seconds <= MAX_EXPIRY_SECONDS:
        raise BountyError(f"bounty {name!r}: expiry must be between 1 s and 10 years")


def _text(record: Mapping[str, Any], field: str, default: str | None = None) -> str:
    value = record.get(field, default)
    if not isinstance(value, str):
        # YAML reads `bounty_id: 2026` as a number; quoting it is the fix, not guessing.
        raise BountyError(
            f"bounty {record.get('bounty_id', '?')!r}: {field} must be text (quote it in YAML), "
            f"not {value!r}"
        )
    return value


def _decimal(value: Any, what: str) -> Decimal:
    if isinstance(value, (bool, float)):
        raise BountyError(f"{what} must be an exact decimal, not {type(value).__name__}")
    try:
        return Decimal(str(value).strip())
    except InvalidOperation:
        raise BountyError(f"{what} is not a number: {value!r}") from None


def _amount(value: Any, name: str) -> Decimal:
    try:
        return to_usdc(_decimal(value, f"bounty {name!r}: amount_usdc"))
    except InvalidAmountError as exc:
        raise BountyError(f"bounty {name!r}: amount_usdc: {exc}") from None


def parse_duration(value: Any) -> int:
    """Reads an expiry: whole seconds, or a number with s, m, h or d (``"36h"``, ``"7d"``).

    Raises:
        BountyError: the value is not a positive whole duration.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, Decimal) and value == value.to_integral_value():
        return int(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text.isdigit():
            return int(text)
        match = _DURATION.fullmatch(text)
        if match:
            return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    raise BountyError(f"expiry must be whole seconds or a number with s, m, h or d, not {value!r}")


def format_duration(seconds: int) -> str:
    """The shortest exact spelling of a duration that ``parse_duration`` reads back."""
    for unit in ("d", "h", "m"):
        if seconds % _UNIT_SECONDS[unit] == 0:
            return f"{seconds // _UNIT_SECONDS[unit]}{unit}"
    return f"{seconds}s"


# -- the bounties file -----------------------------------------------------------------------


class _DecimalLoader(yaml.SafeLoader):
    """A YAML loader that reads floats as the exact decimals written in the file."""


def _yaml_decimal(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Decimal:
    text = loader.construct_scalar(node).replace("_", "").lower()
    specials = {".inf": "Infinity", "+.inf": "Infinity", "-.inf": "-Infinity", ".nan": "NaN"}
    return Decimal(specials.get(text, text))


_DecimalLoader.add_constructor("tag:yaml.org,2002:float", _yaml_decimal)


def bounties_path() -> Path:
    """The bounties file: ``PF_BOUNTIES_FILE``, else ``bounties.yaml`` or ``.json`` in PF_HOME.

    Raises:
        BountyError: both ``bounties.yaml`` and ``bounties.json`` exist, so neither is clearly
            the one meant.
    """
    configured = os.getenv(BOUNTIES_FILE_ENV)
    if configured:
        return Path(configured).resolve()
    home = pf_home()
    found = [home / name for name in ("bounties.yaml", "bounties.yml", "bounties.json")]
    found = [path for path in found if path.exists()]
    if len(found) > 1:
        raise BountyError(
            f"both {found[0]} and {found[1]} exist; keep one, or set {BOUNTIES_FILE_ENV}"
        )
    return found[0] if found else home / "bounties.yaml"


def _read_entries(path: Path) -> tuple[list[Any], bool]:
    """The raw entries of the file, and whether the file is a top-level list."""
    if not path.exists():
        return [], True
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".json":
            document = simplejson.loads(text, use_decimal=True) if text.strip() else None
        else:
            document = yaml.load(text, Loader=_DecimalLoader)
    except (ValueError, yaml.YAMLError) as exc:
        raise BountyError(f"{path} is not valid {path.suffix.lstrip('.').upper()}: {exc}") from None
    if document is None:
        return [], True
    if isinstance(document, list):
        return document, True
    if isinstance(document, dict) and set(document) == {"bounties"}:
        return list(document["bounties"] or []), False
    raise BountyError(f"{path} must hold a list of bounties (or a mapping with a bounties key)")


def load_bounties(path: Path | None = None) -> dict[str, Bounty]:
    """Every bounty declared in the file, by id, in the order declared.

    Args:
        path: the file; defaults to ``bounties_path()``. A missing file declares nothing.

    Raises:
        BountyError: an entry is invalid or two entries share an id.
    """
    path = path or bounties_path()
    found: dict[str, Bounty] = {}
    for entry in _read_entries(path)[0]:
        try:
            bounty = Bounty.from_record(entry)
        except BountyError as exc:
            raise BountyError(f"{path}: {exc}") from None
        if bounty.bounty_id in found:
            raise BountyError(f"{path}: bounty {bounty.bounty_id!r} is declared twice")
        found[bounty.bounty_id] = bounty
    return found


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    # Two `pf-platform escrow create` at once would otherwise both read, append and replace,
    # and one declaration would vanish without a word.
    # The lock is taken on the folder, which outlives the atomic replace of the file itself.
    path.parent.mkdir(parents=True, exist_ok=True)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        fcntl.flock(folder, fcntl.LOCK_EX)
        yield
    finally:
        os.close(folder)


def _replace(path: Path, text: str) -> None:
    with tempfile.NamedTemporaryFile(
        "w", encoding="utf-8", dir=path.parent, prefix=f".{path.name}.", delete=False
    ) as handle:
        handle.write(text)
    os.replace(handle.name, path)


def declare_bounty(bounty: Bounty, path: Path | None = None) -> bool:
    """Appends a bounty to the bounties file.

    A YAML file that is a top-level list gets the entry appended as text, so its comments stay;
    other layouts are rewritten whole.

    Args:
        bounty: the bounty to declare.
        path: the file; defaults to ``bounties_path()``.

    Returns:
        True when appended; False when the identical bounty was already declared.

    Raises:
        BountyError: another bounty with this id is declared.
    """
    path = path or bounties_path()
    with _locked(path):
        existing = load_bounties(path)
        if bounty.bounty_id in existing:
            if existing[bounty.bounty_id] == bounty:
                return False
            raise BountyError(
                f"bounty {bounty.bounty_id!r} is already declared in {path} with other terms; "
                "an escrow's terms never change, so declare the new terms under a new id"
            )
        entries, is_list = _read_entries(path)
        if path.suffix == ".json":
            document: Any = entries + [bounty.to_record()]
            if not is_list:
                document = {"bounties": document}
            _replace(path, simplejson.dumps(document, use_decimal=True, indent=2) + "\n")
        elif is_list:
            text = path.read_text(encoding="utf-8") if path.exists() else ""
            if text and not text.endswith("\n"):
                text += "\n"
            item = yaml.safe_dump([bounty.to_record()], sort_keys=False, allow_unicode=True)
            _replace(path, text + item)
        else:
            records = [b.to_record() for b in existing.values()] + [bounty.to_record()]
            _replace(path, yaml.safe_dump({"bounties": records}, sort_keys=False))
    return True
