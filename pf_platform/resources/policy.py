"""The spend guard: how much a day and an agent may be paid before a person must approve."""

from decimal import Decimal

import dagster as dg
from pydantic import field_validator

from pf_platform.payouts.money import to_usdc


class PayoutPolicyResource(dg.ConfigurableResource):
    """Caps checked before any money moves; a run over a cap fails unless approved.

    Attributes:
        max_usdc_per_day: the most one partition may have paid in total, as a decimal string.
        max_usdc_per_agent: the most one agent may have been paid for one partition.
    """

    max_usdc_per_day: str = "1000"
    max_usdc_per_agent: str = "100"

    @field_validator("max_usdc_per_day", "max_usdc_per_agent")
    @classmethod
    def _check_cap(cls, value: str) -> str:
        if to_usdc(value) < 0:
            raise ValueError(f"a cap must not be negative, not {value}")
        return value

    def day_cap(self) -> Decimal:
        return to_usdc(self.max_usdc_per_day)

    def agent_cap(self) -> Decimal:
        return to_usdc(self.max_usdc_per_agent)
