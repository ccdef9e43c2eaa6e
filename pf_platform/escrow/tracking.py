"""Reading the MLflow tracking store for bounties, and writing a release back onto the run.

The store is ``sqlite:///$PF_HOME/mlflow/mlflow.db`` unless ``PF_MLFLOW_TRACKING_URI`` names
another (a tracking server, ``databricks``, ...). Only ``MlflowClient`` is used, never the fluent
``mlflow.*`` API, so nothing here depends on or changes a process-wide active run.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from pf_platform.escrow.bounties import FINAL, Bounty
from pf_platform.escrow.rules import Crossing, MetricPoint, crossing_point
from pf_platform.settings import pf_home

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run

TRACKING_URI_ENV = "PF_MLFLOW_TRACKING_URI"
ESCROW_ID_TAG = "pf.escrow_id"
RELEASE_TX_TAG = "pf.release_tx_id"
BOUNTY_TAG = "pf.bounty_id"
_PAGE_SIZE = 1000


def tracking_uri() -> str:
    """The tracking store to read: ``PF_MLFLOW_TRACKING_URI``, else the sqlite file in PF_HOME."""
    return os.getenv(TRACKING_URI_ENV) or f"sqlite:///{pf_home() / 'mlflow' / 'mlflow.db'}"


def tracking_client(uri: str | None = None) -> MlflowClient:
    """A client for the store, creating the folder of a local sqlite store if needed."""
    from mlflow import MlflowClient

    uri = uri or tracking_uri()
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return MlflowClient(tracking_uri=uri)


def ensure_experiment(client: MlflowClient, name: str) -> str:
    """The id of an experiment, created when missing.

    A new experiment on a local sqlite store keeps its artifacts beside the database; MLflow's
    default would be ``./mlruns`` under whatever folder the process happened to start in.
    """
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    uri = client.tracking_uri
    location = None
    if uri.startswith("sqlite:///"):
        location = (Path(uri.removeprefix("sqlite:///")).parent / "artifacts").as_uri()
    return client.create_experiment(name, artifact_location=location)


def _runs(client: MlflowClient, experiment_id: str) -> Iterator[Run]:
    token = None
    while True:
        page = client.search_runs(
            [experiment_id],
            max_results=_PAGE_SIZE,
            page_token=token,
            order_by=["attributes.start_time ASC"],
        )
        yield from page
        token = page.token
        if not token:
            return


def find_crossings(client: MlflowClient, bounty: Bounty) -> list[Crossing]:
    """Every run of an eligible agent that meets the bounty's target, with its crossing point.

    Runs are those of the bounty's experiment whose ``agent_tag`` names an eligible agent and that
    logged the bounty's metric under exactly its key. Under the ``final`` rule only finished runs
    count, since the last step of a run still training is not its final value. Deleted runs never
    count.

    Returns:
        One crossing per qualifying run, unordered; an experiment that does not exist yet has
        none.
    """
    from mlflow.entities import RunStatus

    experiment = client.get_experiment_by_name(bounty.experiment)
    if experiment is None:
        return []
    eligible = set(bounty.eligible_agents)
    found: list[Crossing] = []
    for run in _runs(client, experiment.experiment_id):
        agent = run.data.tags.get(bounty.agent_tag)
        if agent not in eligible or bounty.metric not in run.data.metrics:
            continue
        if bounty.rule == FINAL and run.info.status != RunStatus.to_string(RunStatus.FINISHED):
            continue
        history = [
            MetricPoint(value=m.value, timestamp_ms=m.timestamp, step=m.step)
            for m in client.get_metric_history(run.info.run_id, bounty.metric)
        ]
        point = crossing_point(history, bounty.threshold, bounty.direction, bounty.rule)
        if point is not None:
            found.append(
                Crossing(
                    agent_id=agent,
                    run_id=run.info.run_id,
                    value=point.value,
                    timestamp_ms=point.timestamp_ms,
                    step=point.step,
                )
            )
    return found


def tag_release(
    client: MlflowClient, run_id: str, *, bounty_id: str, escrow_id: str, tx_id: str
) -> None:
    """Writes the release onto the winning run, so the run links to the money it earned."""
    client.set_tag(run_id, BOUNTY_TAG, bounty_id)
    client.set_tag(run_id, ESCROW_ID_TAG, escrow_id)
    client.set_tag(run_id, RELEASE_TX_TAG, tx_id)


def release_tags(client: MlflowClient, run_id: str) -> dict[str, str]:
    """The escrow tags a run carries (missing ones are absent from the result)."""
    tags = client.get_run(run_id).data.tags
    return {key: tags[key] for key in (BOUNTY_TAG, ESCROW_ID_TAG, RELEASE_TX_TAG) if key in tags}
