"""Exact USDC amounts.

USDC carries six decimal places. Every amount in pf_platform is a ``decimal.Decimal`` quantized
to that scale; floats are refused at the boundary rather than rounded, because a float that
reached this point has already lost the exact value.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

USDC_SCALE = 6
USDC_QUANTUM = Decimal(1).scaleb(-USDC_SCALE)
MICROS_PER_USDC = 10**USDC_SCALE


class InvalidAmountError(ValueError):
    """An amount that is not an exact, finite USDC value."""


def to_usdc(value: Decimal | int | str) -> Decimal:
    """Returns ``value`` as a Decimal at USDC scale.

    Args:
        value: a Decimal, an int or a decimal string. Floats are rejected.

    Raises:
        InvalidAmountError: the value is a float, not a number, not finite, or has more than six
            decimal places.
    """
    if isinstance(value, (bool, float)):
        raise InvalidAmountError(f"amount must be Decimal, int or str, not {type(value).__name__}")
    try:
        amount = Decimal(value)
    except (InvalidOperation, TypeError, ValueError) as exc:
        raise InvalidAmountError(f"not a decimal amount: {value!r}") from exc
    if not amount.is_finite():
        raise InvalidAmountError(f"amount is not finite: {value!r}")
    quantized = amount.quantize(USDC_QUANTUM, rounding=ROUND_HALF_EVEN)
    if quantized != amount:
        raise InvalidAmountError(f"amount has more than {USDC_SCALE} decimal places: {value!r}")
    return quantized


def to_micros(amount: Decimal) -> int:
    """Converts an exact USDC amount to an integer count of micro-USDC."""
    return int(to_usdc(amount) * MICROS_PER_USDC)


def from_micros(micros: int) -> Decimal:
    """Converts an integer count of micro-USDC to a USDC Decimal."""
    return (Decimal(micros) / MICROS_PER_USDC).quantize(USDC_QUANTUM)
