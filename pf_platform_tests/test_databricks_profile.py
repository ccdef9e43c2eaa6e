"""The databricks profile, as far as it can be proven without a live workspace.

The contract under test:

- With its environment set (placeholders here), ``build_definitions("databricks")`` loads, binds
  the same resource keys as the local profile, and resolves every job. ``step_launcher`` is
  ``databricks_pyspark_step_launcher``, built from the environment: the cluster, the storage
  block, and the secret-scope mapping that puts ``PF_API_KEY`` on the cluster. No secret value
  appears in its config, in what it would upload to DBFS, or in the resources' reprs.
- A missing or invalid environment fails with one error that names every problem and echoes no
  value.
- ``transfer_results`` runs under a step launcher: Dagster's local external step launcher pickles
  the step and runs it in a separate Python process (the same mechanism the Databricks launcher
  uses, with a subprocess instead of a cluster). Against the sandbox it pays the day exactly once,
  and a re-run sends nothing.

Submitting to a real workspace, the cluster-side setup (secret scope, storage keys, libraries) and
Spark on Databricks are not tested here: they need a live workspace.
"""

from __future__ import annotations

import os
from decimal import Decimal
from importlib.metadata import version
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.execution.plan.external_step import (
    PICKLED_EVENTS_FILE_NAME,
    PICKLED_STEP_RUN_REF_FILE_NAME,
    local_external_step_launcher,
)
from dagster_databricks.databricks_pyspark_step_launcher import DatabricksPySparkStepLauncher

from pf_platform import settings
from pf_platform.definitions import build_definitions, build_resources
from pf_platform.resources.databricks import (
    DatabricksProfileError,
    databricks_settings,
    step_launcher_config,
)
from pf_platform_tests.helpers import ledger_paid_by_agent

REPO_ROOT = Path(__file__).resolve().parents[1]

# Placeholders that look like the real thing, so a leak would be easy to spot.
TOKEN = "dapi0123456789abcdef-placeholder-token"
API_KEY = "pf_live_placeholder_key_never_shown"
AWS_SECRET = "aws/placeholder+secret/access/key"
HOST = "https://dbc-00000000-0000.cloud.databricks.com"
CLUSTER_ID = "0101-000000-placeholder"
SECRETS = (TOKEN, API_KEY, AWS_SECRET)

DATABRICKS_ENV = {
    "DATABRICKS_HOST": HOST,
    "DATABRICKS_TOKEN": TOKEN,
    "PF_DATABRICKS_SECRET_SCOPE": "pf-platform",
    "PF_DATABRICKS_CLUSTER_ID": CLUSTER_ID,
    "PF_LAKE_ROOT": "s3://pf-lake-bucket/lake",
    "PF_API_BASE_URL": "https://payments.example.invalid",
    "PF_API_KEY": API_KEY,
    "AWS_REGION": "eu-west-1",
    "AWS_SECRET_ACCESS_KEY": AWS_SECRET,
}


@pytest.fixture
def databricks_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The databricks profile's environment with placeholder values; returns the package dir."""
    package_dir = tmp_path / "ship"
    (package_dir / "pf_platform").mkdir(parents=True)
    (package_dir / "pf_platform" / "__init__.py").write_text("")
    for name in (
        "PF_DATABRICKS_SPARK_VERSION",
        "PF_DATABRICKS_NODE_TYPE",
        "PF_MLFLOW_TRACKING_URI",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("DATABRICKS_RUNTIME_VERSION", raising=False)
    for name, value in DATABRICKS_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("PF_DATABRICKS_PACKAGE_DIR", str(package_dir))
    monkeypatch.setenv("PF_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PF_PROFILE", "databricks")
    return package_dir


def _init_launcher(resource_def: dg.ResourceDefinition) -> DatabricksPySparkStepLauncher:
    # Builds the launcher the way a run would; the Databricks client it creates talks to nobody
    # until a step is launched.
    with dg.build_resources({"step_launcher": resource_def}) as resources:
        return resources.step_launcher


def _assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text


@pytest.mark.filterwarnings("ignore::dagster.SupersessionWarning")
def test_databricks_profile_loads_and_every_job_resolves(databricks_env):
    defs = build_definitions("databricks")

    # Resolving a job fails when a resource key one of its steps requires is not bound.
    jobs = {job.name for job in defs.resolve_all_job_defs()}
    assert {"payout_job", "wallet_snapshot_job", "escrows_job", "escrow_release_job"} <= jobs
    assert "step_launcher" in defs.resolve_assets_def("transfer_results").required_resource_keys
    assert set(defs.resources) == set(build_resources("local"))

    resources = defs.resources
    assert resources["purple_flea"].base_url == "https://payments.example.invalid"
    assert resources["purple_flea"].api_key == dg.EnvVar("PF_API_KEY")
    assert resources["lake"].root == "s3://pf-lake-bucket/lake"
    assert resources["lake"].storage_options == {"AWS_REGION": "eu-west-1"}
    assert resources["mlflow"].tracking_uri == "databricks"
    assert resources["pyspark"].spark_config == {}

    launcher = _init_launcher(resources["step_launcher"])
    assert isinstance(launcher, DatabricksPySparkStepLauncher)
    assert launcher.databricks_host == HOST
    assert launcher.run_config["cluster"] == {"existing": CLUSTER_ID}
    assert {"pypi": {"package": f"deltalake=={version('deltalake')}"}} in (
        launcher.run_config["libraries"]
    )
    assert launcher.local_dagster_job_package_path == str(databricks_env)
    assert launcher.secrets == [{"name": "PF_API_KEY", "scope": "pf-platform", "key": "pf-api-key"}]
    assert launcher.storage == {
        "s3": {
            "secret_scope": "pf-platform",
            "access_key_key": "aws-access-key-id",
            "secret_key_key": "aws-secret-access-key",
        }
    }
    assert launcher.env_variables == {
        "PF_PROFILE": "databricks",
        "PF_LAKE_ROOT": "s3://pf-lake-bucket/lake",
        "PF_API_BASE_URL": "https://payments.example.invalid",
        "PF_DATABRICKS_SECRET_SCOPE": "pf-platform",
        "PF_DATABRICKS_CLUSTER_ID": CLUSTER_ID,
        "DATABRICKS_HOST": HOST,
        "AWS_REGION": "eu-west-1",
    }

    config = step_launcher_config(databricks_settings())
    assert config["databricks_token"] == {"env": "DATABRICKS_TOKEN"}
    # What is pickled and uploaded to DBFS for the cluster, and every config and repr around it.
    _assert_no_secret(repr(vars(launcher.create_remote_config())))
    _assert_no_secret(repr(config))
    _assert_no_secret(repr(launcher.run_config))
    _assert_no_secret(repr(resources))
    _assert_no_secret(repr(databricks_settings()))


@pytest.mark.filterwarnings("ignore::dagster.SupersessionWarning")
def test_new_cluster_and_adls2_lake_from_env(databricks_env, monkeypatch):
    monkeypatch.delenv("PF_DATABRICKS_CLUSTER_ID")
    monkeypatch.setenv("PF_DATABRICKS_SPARK_VERSION", "15.4.x-scala2.12")
    monkeypatch.setenv("PF_DATABRICKS_NODE_TYPE", "Standard_D4ds_v5")
    monkeypatch.setenv("PF_DATABRICKS_NUM_WORKERS", "3")
    monkeypatch.setenv("PF_LAKE_ROOT", "abfss://lake@pfaccount.dfs.core.windows.net/pf")

    launcher = _init_launcher(build_resources("databricks")["step_launcher"])

    assert launcher.run_config["cluster"] == {
        "new": {
            "size": {"num_workers": 3},
            "spark_version": "15.4.x-scala2.12",
            "nodes": {"node_types": {"node_type_id": "Standard_D4ds_v5"}},
        }
    }
    assert launcher.storage == {
        "adls2": {
            "secret_scope": "pf-platform",
            "storage_account_name": "pfaccount",
            "storage_account_key_key": "azure-storage-account-key",
        }
    }
    assert {
        "name": "AZURE_STORAGE_ACCOUNT_KEY",
        "scope": "pf-platform",
        "key": "azure-storage-account-key",
    } in launcher.secrets
    # The cluster rebuilds the same settings from what it is sent.
    assert launcher.env_variables["PF_DATABRICKS_NUM_WORKERS"] == "3"
    assert launcher.env_variables["PF_DATABRICKS_NODE_TYPE"] == "Standard_D4ds_v5"


def test_missing_env_names_every_missing_variable(monkeypatch):
    for name in (*DATABRICKS_ENV, "PF_DATABRICKS_SPARK_VERSION", "PF_DATABRICKS_NODE_TYPE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PF_API_KEY", API_KEY)

    with pytest.raises(DatabricksProfileError) as raised:
        build_definitions("databricks")

    message = str(raised.value)
    for name in (
        "DATABRICKS_HOST",
        "DATABRICKS_TOKEN",
        "PF_DATABRICKS_SECRET_SCOPE",
        "PF_DATABRICKS_CLUSTER_ID",
        "PF_LAKE_ROOT",
        "PF_API_BASE_URL",
    ):
        assert name in message
    assert "PF_API_KEY" not in message  # set, so not reported
    _assert_no_secret(message)


def test_invalid_env_is_reported_without_its_value(databricks_env, monkeypatch):
    monkeypatch.setenv("PF_LAKE_ROOT", "/mnt/local/lake")
    monkeypatch.delenv("DATABRICKS_TOKEN")
    (databricks_env / ".pf_home").mkdir()

    with pytest.raises(DatabricksProfileError) as raised:
        databricks_settings()

    message = str(raised.value)
    assert "missing environment variables: DATABRICKS_TOKEN" in message
    assert "PF_LAKE_ROOT must be a cloud URI" in message
    assert "/mnt/local/lake" not in message
    assert "holds .pf_home" in message
    _assert_no_secret(message)


def test_cluster_side_needs_no_workspace_token(databricks_env, monkeypatch):
    # On the cluster the step is already running: the token is not there and is not needed, and
    # the package directory is the one the launcher unpacked.
    monkeypatch.setenv("DATABRICKS_RUNTIME_VERSION", "15.4")
    monkeypatch.delenv("DATABRICKS_TOKEN")
    monkeypatch.delenv("PF_DATABRICKS_PACKAGE_DIR")

    assert databricks_settings().cluster == {"existing": CLUSTER_ID}


# --- transfer_results out of process ------------------------------------------------------------

DAY = "2026-11-05"
LABELS = ["happy", "sad"]
OWED = {"agent_a": Decimal("0.008"), "agent_b": Decimal("0.008"), "agent_c": Decimal("0.006")}
SCRATCH_ENV = "PF_TEST_STEP_SCRATCH"


def out_of_process_payout_job() -> dg.JobDefinition:
    """The local payout_job, with ``step_launcher`` launching its step in another process.

    Module-level so that Dagster can reconstruct it in the step's process.
    """
    local = build_definitions("local")
    launcher = local_external_step_launcher.configured({"scratch_dir": {"env": SCRATCH_ENV}})
    defs = dg.Definitions(
        assets=local.assets,
        jobs=local.jobs,
        resources={**local.resources, "step_launcher": launcher},
    )
    return defs.resolve_job_def("payout_job")


def _land_day() -> None:
    # agents a and b agree on all four items; c disagrees once (3 of 4).
    folder = settings.landing_root() / DAY
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["record_id,item_id,agent_id,label"]
    for item in range(4):
        for agent in ("agent_a", "agent_b", "agent_c"):
            label = "sad" if agent == "agent_c" and item == 0 else "happy"
            lines.append(f"{agent}-{item},item_{item},{agent},{label}")
    (folder / "labels.csv").write_text("\n".join(lines) + "\n")


def _run(instance: dg.DagsterInstance) -> dg.ExecutionResult:
    return dg.execute_job(
        dg.reconstructable(out_of_process_payout_job),
        instance=instance,
        run_config={"resources": {"labeling_task": {"config": {"label_set": LABELS}}}},
        tags={"dagster/partition": DAY},
    )


def _transfer_events(result, event_type: dg.DagsterEventType) -> list[dg.DagsterEvent]:
    return [
        event
        for event in result.all_events
        if event.step_key == "transfer_results" and event.event_type == event_type
    ]


@pytest.mark.filterwarnings("ignore::dagster.SupersessionWarning")
def test_transfer_step_runs_out_of_process_and_pays_once(
    project_home, sandbox, tmp_path, monkeypatch
):
    scratch = tmp_path / "scratch"
    monkeypatch.setenv(SCRATCH_ENV, str(scratch))
    # The step's process must import this checkout (the venv may hold another editable install).
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO_ROOT), os.getenv("PYTHONPATH", "")]))
    _land_day()
    sandbox.register(list(OWED))

    (tmp_path / "instance").mkdir()
    (tmp_path / "instance" / "dagster.yaml").write_text("")
    with dg.DagsterInstance.local_temp(str(tmp_path / "instance")) as instance:
        first = _run(instance)

        assert first.success
        # Every event of the payout step came from another process; the steps before it ran here.
        step_events = [e for e in first.all_events if e.step_key == "transfer_results"]
        pids = {e.pid for e in step_events}
        assert len(pids) == 1 and os.getpid() not in pids
        before = [e for e in first.all_events if e.step_key == "payout_batches"]
        assert {e.pid for e in before} == {os.getpid()}
        step_dir = scratch / first.run_id / "transfer_results"
        assert (step_dir / PICKLED_STEP_RUN_REF_FILE_NAME).is_file()
        assert (step_dir / PICKLED_EVENTS_FILE_NAME).is_file()

        (materialized,) = _transfer_events(first, dg.DagsterEventType.ASSET_MATERIALIZATION)
        metadata = {
            key: value.value
            for key, value in materialized.step_materialization_data.materialization.metadata.items()
        }
        assert metadata["transfers_sent"] == 3
        assert metadata["usdc_paid_this_run"] == "0.022000"
        assert sandbox.stats()["transfers_committed"] == 3
        assert sandbox.balances() == OWED
        assert ledger_paid_by_agent([DAY]) == OWED
        checks = {
            e.asset_check_evaluation_data.check_name: e.asset_check_evaluation_data.passed
            for e in _transfer_events(first, dg.DagsterEventType.ASSET_CHECK_EVALUATION)
        }
        assert checks == dict.fromkeys(
            [
                "check_ledger_settled",
                "check_no_failed_transfers",
                "check_no_overpayment",
                "check_ledger_matches_api",
            ],
            True,
        )

        again = _run(instance)

        assert again.success
        (materialized,) = _transfer_events(again, dg.DagsterEventType.ASSET_MATERIALIZATION)
        assert materialized.pid != os.getpid()
        metadata = materialized.step_materialization_data.materialization.metadata
        assert metadata["transfers_sent"].value == 0
        assert sandbox.stats()["transfers_committed"] == 3
        assert sandbox.balances() == OWED
        assert ledger_paid_by_agent([DAY]) == OWED
