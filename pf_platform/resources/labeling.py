"""The labeling task: what a valid label is and what a verified one earns."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import dagster as dg
from pydantic import Field, field_validator

from pf_platform.payouts.money import to_usdc
from pf_platform.settings import landing_root

FACE_SENTIMENT_LABELS = ["angry", "happy", "neutral", "sad"]


class LabelingTaskResource(dg.ConfigurableResource):
    """The rules the labeling assets apply to a day of label submissions.

    Attributes:
        landing_root: the folder holding one ``<yyyy-mm-dd>/`` folder of files per day.
        label_set: the labels the task accepts.
        agreement_threshold: the least share of an agent's labels (on items with a consensus)
            that must agree with the consensus for the agent to be paid, as a decimal string.
        rate_usdc: what one verified label earns, as a decimal string (exact).
        min_votes: the fewest labels an item needs before it has a consensus.
    """

    landing_root: str = Field(default_factory=lambda: str(landing_root()))
    label_set: list[str] = Field(default_factory=lambda: list(FACE_SENTIMENT_LABELS))
    agreement_threshold: str = "0.7"
    rate_usdc: str = "0.002"
    min_votes: int = 2

    @field_validator("label_set")
    @classmethod
    def _check_label_set(cls, value: list[str]) -> list[str]:
        if not value or any(not label for label in value):
            raise ValueError("label_set must hold at least one non-empty label")
        return value

    @field_validator("agreement_threshold")
    @classmethod
    def _check_threshold(cls, value: str) -> str:
        threshold = Decimal(value)
        if not Decimal(0) <= threshold <= Decimal(1):
            raise ValueError(f"agreement_threshold must be within [0, 1], not {value}")
        return value

    @field_validator("rate_usdc")
    @classmethod
    def _check_rate(cls, value: str) -> str:
        if to_usdc(value) <= 0:
            raise ValueError(f"rate_usdc must be positive, not {value}")
        return value

    def landing_folder(self, day: str) -> Path:
        return Path(self.landing_root) / day

    def sql_variables(self) -> dict[str, object]:
        """The variables the dbt_like_sql models take."""
        return {
            "label_set": list(self.label_set),
            "agreement_threshold": Decimal(self.agreement_threshold),
            "rate_usdc": to_usdc(self.rate_usdc),
            "min_votes": self.min_votes,
        }
