"""Backfills of missed days, launched on the running Dagster instance through its GraphQL API.

A backfill is the same thing the UI's "Materialize" on a range of partitions launches: the
daemon of the running ``dagster dev`` (or deployment) turns it into one run per day. Re-running a
backfill over days already paid is safe: each run pays only what is owed and not yet paid.
"""

from __future__ import annotations

import time
from datetime import UTC, date, datetime, timedelta

import dagster as dg
import httpx

from pf_platform.partitions import daily_partitions

PAYOUT_ASSETS = (
    "label_submissions",
    "validated_labels",
    "quarantined_labels",
    "agent_payout_summary",
    "payout_batches",
    "transfer_results",
)
FINISHED = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}

_LAUNCH = """
mutation Launch($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on Error { message }
  }
}
"""

_STATUS = """
query Status($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill { status numPartitions }
    ... on Error { message }
  }
}
"""


class BackfillError(RuntimeError):
    """The webserver refused or could not be reached."""


def days_between(first: date, last: date) -> list[str]:
    """Every partition key from ``first`` to ``last``, both included."""
    if last < first:
        raise BackfillError(f"--to {last} is before --from {first}")
    return [(first + timedelta(days=n)).isoformat() for n in range((last - first).days + 1)]


def missed_days(instance: dg.DagsterInstance, now: datetime | None = None) -> list[str]:
    """Complete days up to now whose payout (transfer_results) was never materialized."""
    now = now or datetime.now(UTC)
    complete = daily_partitions.get_partition_keys(current_time=now)
    paid = instance.get_materialized_partitions(dg.AssetKey("transfer_results"))
    return [day for day in complete if day not in paid]


def _graphql(webserver: str, query: str, variables: dict) -> dict:
    try:
        response = httpx.post(
            f"{webserver.rstrip('/')}/graphql",
            json={"query": query, "variables": variables},
            timeout=60,
        )
    except httpx.HTTPError as exc:
        raise BackfillError(f"the Dagster webserver at {webserver} does not answer: {exc}") from exc
    body = response.json()
    if response.status_code != 200 or body.get("errors"):
        raise BackfillError(f"the webserver refused the request: {body.get('errors') or body}")
    return body["data"]


def launch_backfill(webserver: str, days: list[str], title: str | None = None) -> str:
    """Launches a backfill of the payout assets over ``days``; returns its id."""
    params = {
        "assetSelection": [{"path": [name]} for name in PAYOUT_ASSETS],
        "partitionNames": days,
        "fromFailure": False,
        "title": title or f"payouts {days[0]} .. {days[-1]}",
    }
    result = _graphql(webserver, _LAUNCH, {"params": params})["launchPartitionBackfill"]
    if result["__typename"] != "LaunchBackfillSuccess":
        raise BackfillError(f"{result['__typename']}: {result.get('message')}")
    return result["backfillId"]


def backfill_status(webserver: str, backfill_id: str) -> str:
    result = _graphql(webserver, _STATUS, {"id": backfill_id})["partitionBackfillOrError"]
    if result["__typename"] != "PartitionBackfill":
        raise BackfillError(f"{result['__typename']}: {result.get('message')}")
    return result["status"]


def wait_for(webserver: str, backfill_id: str, timeout_s: float, poll_s: float = 2.0) -> str:
    """Polls until the backfill finishes; returns its final status."""
    deadline = time.monotonic() + timeout_s
    while True:
        status = backfill_status(webserver, backfill_id)
        if status in FINISHED:
            return status
        if time.monotonic() > deadline:
            raise BackfillError(f"backfill {backfill_id} still {status} after {timeout_s:.0f} s")
        time.sleep(poll_s)
