"""The Dagster UI in headless Chromium: materialize one day from the job page, see what was paid.

Needs Debian's chromium at /usr/bin/chromium (`.ci/run` installs it) and the playwright Python
package, which drives it without downloading a browser of its own.
"""

from __future__ import annotations

import time
from decimal import Decimal
from pathlib import Path

import pytest
from deltalake import DeltaTable
from playwright.sync_api import Page, sync_playwright

from pf_platform.payouts.ledger import Ledger

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOT = Path(__file__).parent / "screenshots" / "transfer_results.png"
DAY = "2026-11-01"
SLOW = 180_000  # ms; the UI waits on a code server and on steps run in subprocesses


def _wait_for_run_success(page: Page, url: str, timeout_s: float = 420) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        # The job's own runs page: the wallet schedule's runs must not count.
        page.goto(f"{url}/locations/pf_platform.definitions/jobs/payout_job/runs")
        page.get_by_text(DAY).first.wait_for(timeout=SLOW)
        body = page.inner_text("body")
        if "Success" in body:
            return
        assert "Failure" not in body, body[:2000]
        time.sleep(5)
    raise AssertionError(f"the run launched from the UI did not succeed in {timeout_s} s")


@pytest.mark.timeout(1500)
def test_materialize_one_day_from_the_ui(dagster_ui):
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            # The UI greets a new browser with a community dialog; skip it whenever it shows.
            page.add_locator_handler(
                page.get_by_role("button", name="Skip"), lambda skip: skip.click()
            )
            page.goto(f"{dagster_ui.url}/jobs")
            page.get_by_role("link", name="payout_job").first.click()
            page.get_by_role("button", name="Materialize all").click(timeout=SLOW)
            partitions = page.get_by_placeholder("No matching partitions")
            partitions.fill(DAY)
            partitions.press("Enter")
            page.get_by_role("button", name="Launch 1 run").click(timeout=SLOW)
            page.get_by_text("Launching").first.wait_for(state="hidden", timeout=SLOW)

            _wait_for_run_success(page, dagster_ui.url)

            page.goto(f"{dagster_ui.url}/assets/transfer_results?view=events&partition={DAY}")
            page.get_by_text("usdc_paid_for_day").wait_for(timeout=SLOW)
            rows = Ledger(str(dagster_ui.home / "lake" / "agents" / "transactions")).read(DAY)
            paid = sum((r.amount_usdc for r in rows if r.status == "succeeded"), Decimal(0))
            assert paid > 0
            assert f"{paid:.6f}" in page.inner_text("body")
            SCREENSHOT.parent.mkdir(exist_ok=True)
            page.screenshot(path=str(SCREENSHOT))
        finally:
            browser.close()

    # Every wallet holds what the ledger says it was paid, over every day this UI has paid.
    ledger = DeltaTable(
        str(dagster_ui.home / "lake" / "agents" / "transactions")
    ).to_pyarrow_table()
    paid_by_agent: dict[str, Decimal] = {}
    for row in ledger.to_pylist():
        if row["status"] == "succeeded":
            paid_by_agent[row["agent_id"]] = (
                paid_by_agent.get(row["agent_id"], 0) + row["amount_usdc"]
            )
    balances = dagster_ui.sandbox.balances()
    assert {agent: amount for agent, amount in balances.items() if amount} == paid_by_agent
