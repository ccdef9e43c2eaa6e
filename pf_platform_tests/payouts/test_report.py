"""The payout report: a real PNG histogram and exact latency percentiles."""

from __future__ import annotations

import base64
from decimal import Decimal

from pf_platform.payouts.report import distribution_markdown, latency_summary


def test_distribution_is_an_inline_png():
    markdown = distribution_markdown(
        {"a": Decimal("0.002"), "b": Decimal("0.004"), "c": Decimal("0.010")}, "paid"
    )
    prefix = "![paid](data:image/png;base64,"
    assert markdown.startswith(prefix) and markdown.endswith(")")
    png = base64.b64decode(markdown[len(prefix) : -1])
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert distribution_markdown({}, "paid") == "no agent paid"


def test_latency_percentiles():
    summary = latency_summary([float(n) for n in range(1, 101)])
    assert summary == {
        "batches": 100,
        "p50_ms": 50.5,
        "p95_ms": 95.0,
        "p99_ms": 99.0,
        "max_ms": 100.0,
    }
    assert latency_summary([7.0]) == {
        "batches": 1,
        "p50_ms": 7.0,
        "p95_ms": 7.0,
        "p99_ms": 7.0,
        "max_ms": 7.0,
    }
    assert latency_summary([]) == {}
