"""The main job, end to end: land a real dataset, start the sandbox, pay every day through Dagster.

``pf-platform demo`` runs the same ``payout_job`` that ``dagster dev`` shows, in process, on the
project-local Dagster instance, so its runs and materializations appear in the UI afterwards.
"""

from __future__ import annotations

import csv
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit

import dagster as dg
import httpx

from pf_platform import settings
from pf_platform.labeling.landing import Dataset, resolve_dataset, spread_over_days
from pf_platform.partitions import FIRST_PAYOUT_DAY
from pf_platform.runs import fail_runs_of_dead_processes, process_tags
from pf_platform.sandbox.server import SandboxProcess, is_running
from pf_platform.settings import DEFAULT_SANDBOX_PORT

DEMO_DAYS = 7


@dataclass
class DaySummary:
    day: str
    labels_in: int = 0
    validated: int = 0
    quarantined: int = 0
    agents_paid: int = 0
    usdc_paid: Decimal = Decimal(0)
    usdc_confirmed: Decimal = Decimal(0)
    transfers_sent: int = 0
    succeeded: bool = True


@dataclass
class DemoSummary:
    dataset: str
    days: list[DaySummary] = field(default_factory=list)
    seconds: float = 0.0
    escrow: object | None = None

    def total(self, name: str):
        return sum((getattr(day, name) for day in self.days), type(getattr(DaySummary(""), name))())

    @property
    def succeeded(self) -> bool:
        escrow_ok = self.escrow is None or self.escrow.succeeded
        return all(day.succeeded for day in self.days) and escrow_ok


INSTANCE_CONFIG = """\
# Written by pf-platform. Every pool, the payout step's purple_flea_payouts included, runs one
# step at a time, so a schedule and a manual backfill of the same day never pay side by side.
concurrency:
  pools:
    default_limit: 1
"""


def ensure_dagster_home() -> Path:
    """Points DAGSTER_HOME at ``$PF_HOME/dagster`` unless it is already set, and creates it."""
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(settings.pf_home() / "dagster")))
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists() or not config.read_text().strip():
        config.write_text(INSTANCE_CONFIG)
    return home


@contextmanager
def payments_api() -> Iterator[tuple[str, str]]:
    """Yields (base URL, API key): the running API, or a sandbox started for the duration."""
    base_url = settings.sandbox_url()
    if is_running(base_url):
        yield base_url, _api_key()
        return
    if not is_loopback(base_url):
        raise click_error(f"the payments API at {base_url} does not answer")
    port = urlsplit(base_url).port or DEFAULT_SANDBOX_PORT
    with SandboxProcess(settings.sandbox_dir() / "ledger.db", port=port) as sandbox:
        yield sandbox.base_url, _api_key()


def is_loopback(base_url: str) -> bool:
    """True for a plain-http URL on this machine: where the demo may start its own sandbox."""
    parts = urlsplit(base_url)
    return parts.scheme == "http" and parts.hostname in ("127.0.0.1", "localhost", "::1")


def check_days(dataset: Dataset, start: date, days: int) -> None:
    """Refuses days that are not complete yet, and days already holding another dataset."""
    last = start + timedelta(days=days - 1)
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    if start < date.fromisoformat(FIRST_PAYOUT_DAY) or last > yesterday:
        raise click_error(
            f"the demo pays complete days from {FIRST_PAYOUT_DAY} to {yesterday}; "
            f"{start} .. {last} is outside them"
        )
    for offset in range(days):
        folder = settings.landing_root() / (start + timedelta(days=offset)).isoformat()
        others = [
            path.name
            for path in (folder.iterdir() if folder.is_dir() else ())
            if not path.name.startswith((".", "_")) and path.stem != dataset.name
        ]
        if others:
            raise click_error(
                f"{folder} already holds {', '.join(sorted(others))}: another dataset's labels "
                "would be paid beside these; use another PF_HOME or --start-date"
            )


def click_error(message: str) -> Exception:
    import click

    return click.ClickException(message)


def _api_key() -> str:
    key = os.environ.get("PF_API_KEY")
    if key:
        return key
    key_file = settings.sandbox_dir() / "treasury.key"
    if not key_file.is_file():
        raise click_error("PF_API_KEY is not set and the sandbox has no treasury key file")
    return key_file.read_text().strip()


def register_agents(base_url: str, api_key: str, dataset: Dataset) -> int:
    """Opens a sandbox wallet for every agent of the dataset (the live API has them already)."""
    with dataset.answers.open(newline="", encoding="utf-8") as handle:
        agents = sorted({row["agent_id"] for row in csv.DictReader(handle)})
    response = httpx.post(
        f"{base_url}/admin/agents",
        json={"agent_ids": agents},
        headers={"Authorization": f"Bearer {api_key}"},
        timeout=30,
    )
    response.raise_for_status()
    return len(agents)


def run_demo(
    dataset_name: str = "face-sentiment",
    start: date | None = None,
    days: int = DEMO_DAYS,
    echo: Callable[[str], None] = print,
) -> DemoSummary:
    """Lands the dataset over ``days`` days and materializes every day through ``payout_job``."""
    started = time.perf_counter()
    start = start or date.fromisoformat(FIRST_PAYOUT_DAY)
    ensure_dagster_home()
    dataset = resolve_dataset(dataset_name)
    check_days(dataset, start, days)
    landed = spread_over_days(dataset, settings.landing_root(), start, days)
    echo(f"landed {dataset.name} over {len(landed)} days in {settings.landing_root()}")

    summary = DemoSummary(dataset=dataset.name)
    with payments_api() as (base_url, api_key):
        os.environ["PF_API_KEY"] = api_key
        os.environ["PF_API_BASE_URL"] = base_url
        if is_loopback(base_url):
            register_agents(base_url, api_key, dataset)

        # Imported here so the resources read PF_API_BASE_URL as just set.
        from pf_platform.definitions import build_definitions

        job = build_definitions().resolve_job_def("payout_job")
        run_config = {
            "resources": {"labeling_task": {"config": {"label_set": list(dataset.label_set)}}},
            # The per-day lines below are the progress; the full event log is in the UI.
            "loggers": {"console": {"config": {"log_level": "WARNING"}}},
        }
        with dg.DagsterInstance.get() as instance:
            for run_id in fail_runs_of_dead_processes(instance):
                # Its payout step would hold the pool's one slot forever; what it paid is safe.
                echo(f"run {run_id} was left unfinished by a process that is gone: marked failed")
            for day in landed:
                result = job.execute_in_process(
                    partition_key=day.isoformat(),
                    instance=instance,
                    run_config=run_config,
                    tags=process_tags(),
                    raise_on_error=False,
                )
                day_summary = _summarize(day.isoformat(), result)
                summary.days.append(day_summary)
                echo(
                    f"{day_summary.day}: {day_summary.labels_in} labels, "
                    f"{day_summary.validated} validated, {day_summary.quarantined} quarantined, "
                    f"{day_summary.transfers_sent} transfers sent, "
                    f"{day_summary.usdc_paid} USDC paid"
                    + ("" if day_summary.succeeded else f"  FAILED (run {result.run_id})")
                )
            # The escrow bonus: three agents train, the one whose run crosses the target is paid.
            from pf_platform.escrow.demo import run_escrow_demo

            summary.escrow = run_escrow_demo(base_url, api_key, instance, echo)
    summary.seconds = time.perf_counter() - started
    return summary


def _summarize(day: str, result: dg.ExecuteInProcessResult) -> DaySummary:
    def metadata(node: str, asset: str) -> dict:
        for event in result.asset_materializations_for_node(node):
            if event.asset_key.to_user_string() == asset:
                return {key: value.value for key, value in event.metadata.items()}
        return {}

    transfers = metadata("transfer_results", "transfer_results")
    return DaySummary(
        day=day,
        labels_in=metadata("label_submissions", "label_submissions").get("rows", 0),
        validated=metadata("validate_labels", "validated_labels").get("rows", 0),
        quarantined=metadata("validate_labels", "quarantined_labels").get("rows", 0),
        agents_paid=transfers.get("agents_paid_this_run", 0),
        usdc_paid=Decimal(transfers.get("usdc_paid_this_run", "0")),
        usdc_confirmed=Decimal(transfers.get("usdc_confirmed_this_run", "0")),
        transfers_sent=transfers.get("transfers_sent", 0),
        succeeded=result.success,
    )


def format_summary(summary: DemoSummary) -> str:
    """The closing lines ``pf-platform demo`` prints."""
    sent = summary.total("transfers_sent")
    lines = [
        f"dataset            {summary.dataset}",
        f"days               {len(summary.days)}",
        f"labels in          {summary.total('labels_in')}",
        f"validated          {summary.total('validated')}",
        f"quarantined        {summary.total('quarantined')}",
        f"agents paid        {summary.total('agents_paid')} (agent-days, this run)",
        f"USDC paid          {summary.total('usdc_paid')}",
        f"transfers sent     {sent}",
        f"seconds            {summary.seconds:.1f}",
    ]
    if summary.escrow is not None:
        lines.append(f"escrow released    {summary.escrow.line()}")
    confirmed = summary.total("usdc_confirmed")
    if confirmed:
        lines.append(f"USDC confirmed     {confirmed} (already paid under this run's keys)")
    if sent == 0 and not confirmed and summary.succeeded:
        lines.append("nothing was owed that was not already paid: 0 transfers sent")
    if not summary.succeeded:
        failed = [day.day for day in summary.days if not day.succeeded]
        lines.append(f"FAILED days: {', '.join(failed)} (see the runs in the Dagster UI)")
    return "\n".join(lines)
