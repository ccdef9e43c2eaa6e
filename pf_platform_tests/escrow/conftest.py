"""Fixtures for the escrow tests: a real MLflow sqlite store, the sandbox, Delta, Dagster.

Creating an MLflow sqlite store runs every schema migration, and opening one loads every
migration script: seconds each. So one store serves the session (``PF_MLFLOW_TRACKING_URI``),
and so does one sandbox server; every test names its experiments, bounties and agents under its
own prefix, so runs never mix and balances are exact per test. A test that moves the sandbox
clock takes a server of its own.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from pf_platform.escrow.bounties import Bounty, declare_bounty
from pf_platform.escrow.tables import EscrowRecord, EscrowTables
from pf_platform.escrow.tracking import ensure_experiment, tracking_client
from pf_platform.sandbox.server import SandboxProcess
from pf_platform_tests.conftest import Sandbox

_test_numbers = itertools.count(1)
QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}


@pytest.fixture(scope="session")
def mlflow_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The tracking URI of an MLflow sqlite store shared by the session's escrow tests."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    tracking_client(uri).search_experiments()
    return uri


@pytest.fixture(scope="session")
def shared_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """One sandbox server for the session's escrow tests."""
    with SandboxProcess(tmp_path_factory.mktemp("escrow-sandbox") / "ledger.db") as process:
        yield Sandbox(process)


@dataclass
class EscrowWorld:
    """Everything an escrow test touches, all of it real: API, MLflow store, Delta, Dagster."""

    home: Path
    sandbox: Sandbox
    instance: dg.DagsterInstance
    defs: dg.Definitions
    prefix: str

    @property
    def mlflow(self):
        return tracking_client()

    @property
    def tables(self) -> EscrowTables:
        lake = self.home / "lake"
        return EscrowTables(str(lake / "escrow" / "escrows"), str(lake / "escrow" / "releases"))

    def agents(self, *names: str) -> list[str]:
        """Agent ids unique to this test, with wallets opened on the sandbox."""
        ids = [f"{self.prefix}-{name}" for name in names]
        self.sandbox.register(ids)
        return ids

    def bounty(self, bounty_id: str, agents: Sequence[str], **terms: Any) -> Bounty:
        """A bounty on ``eval/f1 above 0.9`` for 10 USDC unless ``terms`` say otherwise."""
        defaults: dict[str, Any] = {
            "experiment": f"{self.prefix}-{bounty_id}",
            "metric": "eval/f1",
            "threshold": Decimal("0.9"),
            "amount_usdc": Decimal(10),
            "expiry_seconds": 86400,
        }
        return Bounty(
            bounty_id=f"{self.prefix}-{bounty_id}",
            eligible_agents=tuple(agents),
            **{**defaults, **terms},
        )

    def lock(self, bounty: Bounty) -> EscrowRecord:
        """Declares the bounty and materializes its partition of ``escrows``."""
        declare_bounty(bounty)
        self.instance.add_dynamic_partitions("escrows", [bounty.bounty_id])
        result = self.materialize_escrow(bounty.bounty_id)
        assert result.success
        record = self.tables.escrow(bounty.bounty_id)
        assert record is not None
        return record

    def materialize_escrow(self, bounty_id: str) -> dg.ExecuteInProcessResult:
        return self.defs.resolve_job_def("escrows_job").execute_in_process(
            instance=self.instance, partition_key=bounty_id, run_config=QUIET
        )

    def log_run(
        self,
        experiment: str,
        agent: str | None,
        points: Sequence[tuple[int, float, int]],
        *,
        metric: str = "eval/f1",
        finished: bool = True,
    ) -> str:
        """An MLflow run of ``agent`` logging (step, value, timestamp ms) points of ``metric``."""
        client = self.mlflow
        tags = {} if agent is None else {"pf.agent_id": agent}
        run_id = client.create_run(ensure_experiment(client, experiment), tags=tags).info.run_id
        for step, value, timestamp in points:
            client.log_metric(run_id, metric, value, timestamp=timestamp, step=step)
        if finished:
            client.set_terminated(run_id, "FINISHED")
        return run_id

    def tick(self, cursor: str | None = None) -> dg.SensorResult:
        """One evaluation of ``escrow_release_sensor``, nothing launched."""
        from pf_platform.sensors.escrow import escrow_release_sensor

        context = dg.build_sensor_context(
            instance=self.instance,
            cursor=cursor,
            definitions=self.defs,
            sensor_name="escrow_release_sensor",
            resources=self.defs.resources,
        )
        result = escrow_release_sensor(context)
        assert isinstance(result, dg.SensorResult)
        return result

    def execute(self, request: dg.RunRequest) -> dg.ExecuteInProcessResult:
        """Runs a requested run in process, as the daemon would launch it."""
        return self.defs.resolve_job_def(request.job_name).execute_in_process(
            instance=self.instance,
            partition_key=request.partition_key,
            run_config={**(request.run_config or {}), **QUIET},
            tags=request.tags,
            raise_on_error=False,
        )


def make_world(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    mlflow_store: str,
    sandbox: Sandbox,
    **client_options: Any,
) -> Iterator[EscrowWorld]:
    from pf_platform.escrow.demo import escrow_definitions
    from pf_platform.resources.payments.resource import PurpleFleaResource

    home = tmp_path / "home"
    monkeypatch.setenv("PF_HOME", str(home))
    monkeypatch.setenv("PF_API_BASE_URL", sandbox.base_url)
    monkeypatch.setenv("PF_API_KEY", sandbox.key)
    monkeypatch.setenv("PF_MLFLOW_TRACKING_URI", mlflow_store)
    for name in ("PF_LAKE_ROOT", "PF_BOUNTIES_FILE", "PF_PROFILE"):
        monkeypatch.delenv(name, raising=False)

    resource = PurpleFleaResource(base_url=sandbox.base_url, api_key=sandbox.key, **client_options)
    defs = escrow_definitions(sandbox.base_url, sandbox.key, purple_flea=resource)
    with dg.DagsterInstance.ephemeral() as instance:
        yield EscrowWorld(
            home=home,
            sandbox=sandbox,
            instance=instance,
            defs=defs,
            prefix=f"t{next(_test_numbers)}",
        )


@pytest.fixture
def world(tmp_path, monkeypatch, mlflow_store, shared_sandbox) -> Iterator[EscrowWorld]:
    """A project home on the shared sandbox; the client retries quickly."""
    yield from make_world(
        tmp_path,
        monkeypatch,
        mlflow_store,
        shared_sandbox,
        max_attempts=2,
        backoff_initial_s=0.01,
        backoff_max_s=0.02,
    )


@pytest.fixture
def own_world(tmp_path, monkeypatch, mlflow_store, sandbox) -> Iterator[EscrowWorld]:
    """A project home on a sandbox of its own, for tests that move the server clock."""
    yield from make_world(tmp_path, monkeypatch, mlflow_store, sandbox)
