"""The spend guard's arithmetic: paid so far plus this run's plan, against the caps."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal

from pf_platform.payouts.planning import PlannedTransfer


@dataclass(frozen=True)
class SpendCheck:
    day_total: Decimal
    day_cap: Decimal
    agents_over: dict[str, Decimal]
    agent_cap: Decimal

    @property
    def within_limits(self) -> bool:
        return self.day_total <= self.day_cap and not self.agents_over


def check_spend(
    planned: Iterable[PlannedTransfer],
    paid: Mapping[str, Decimal],
    *,
    day_cap: Decimal,
    agent_cap: Decimal,
) -> SpendCheck:
    """What the partition would have paid if every planned transfer succeeds.

    Args:
        planned: this run's transfers.
        paid: what each agent has already been paid for the partition.
        day_cap: the most the partition may pay in total.
        agent_cap: the most one agent may be paid for the partition.
    """
    totals: dict[str, Decimal] = defaultdict(Decimal, paid)
    for transfer in planned:
        totals[transfer.agent_id] += transfer.amount_usdc
    return SpendCheck(
        day_total=sum(totals.values(), Decimal(0)),
        day_cap=day_cap,
        agents_over={agent: total for agent, total in sorted(totals.items()) if total > agent_cap},
        agent_cap=agent_cap,
    )
