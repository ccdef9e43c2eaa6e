"""What a person reads on a payout materialization: the day's distribution and the latency."""

from __future__ import annotations

import base64
import io
import statistics
from collections.abc import Mapping, Sequence
from decimal import Decimal

from pf_platform.payouts.money import to_micros


def distribution_markdown(paid: Mapping[str, Decimal], title: str) -> str:
    """A histogram of per-agent USDC paid, as a markdown image the Dagster UI renders inline."""
    if not paid:
        return "no agent paid"
    # Imported here: matplotlib costs most of a second, and only this function needs it.
    import matplotlib

    matplotlib.use("Agg")  # no display on a server; must precede pyplot
    import matplotlib.pyplot as plt

    # Exact integer micro-USDC on the axis: no amount passes through a float in this module.
    amounts = [to_micros(amount) for amount in paid.values()]
    figure, axes = plt.subplots(figsize=(6, 3), dpi=100)
    axes.hist(amounts, bins=min(20, max(5, len(amounts) // 2)), color="#7c3aed")
    axes.set_xlabel("micro-USDC paid per agent")
    axes.set_ylabel("agents")
    axes.set_title(title)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f"![{title}](data:image/png;base64,{encoded})"


def latency_summary(latencies_ms: Sequence[float]) -> dict[str, float]:
    """Batch request latency percentiles, in milliseconds (empty when nothing was sent)."""
    if not latencies_ms:
        return {}
    ordered = sorted(latencies_ms)
    cuts = statistics.quantiles(ordered, n=100, method="inclusive") if len(ordered) > 1 else []

    def pick(q: int) -> float:
        return round(cuts[q - 1] if cuts else ordered[0], 1)

    return {
        "batches": len(ordered),
        "p50_ms": pick(50),
        "p95_ms": pick(95),
        "p99_ms": pick(99),
        "max_ms": round(ordered[-1], 1),
    }
