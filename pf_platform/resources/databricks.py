"""The databricks profile: its settings, read from the environment in one place, and the step
launcher that runs ``transfer_results`` on a Databricks cluster.

Only names of secrets travel through here, never their values: the workspace token stays an
``{"env": ...}`` reference that Dagster resolves when the launcher starts, and the payments key
and storage keys are fetched from a Databricks secret scope on the cluster itself.

The same definitions are rebuilt on the cluster when the step starts there (the launcher ships the
package and re-imports ``pf_platform.definitions``), so every non-secret setting read here is
forwarded to the cluster as an environment variable, and the cluster sees what this side saw.
"""

from __future__ import annotations

import importlib.metadata
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import dagster as dg

import pf_platform

PROFILE = "databricks"

# Keys the operator stores in the secret scope named by PF_DATABRICKS_SECRET_SCOPE.
API_KEY_SECRET = "pf-api-key"
AWS_ACCESS_KEY_SECRET = "aws-access-key-id"
AWS_SECRET_KEY_SECRET = "aws-secret-access-key"
AZURE_ACCOUNT_KEY_SECRET = "azure-storage-account-key"

# Always required, and forwarded to the cluster.
_REQUIRED = ("DATABRICKS_HOST", "PF_DATABRICKS_SECRET_SCOPE", "PF_LAKE_ROOT", "PF_API_BASE_URL")
# Secrets: only checked for presence, never read. On the cluster the launcher exports PF_API_KEY
# from the secret scope before the definitions load.
_API_KEY = "PF_API_KEY"
_TOKEN = "DATABRICKS_TOKEN"
_CLUSTER_ID = "PF_DATABRICKS_CLUSTER_ID"
_NEW_CLUSTER = ("PF_DATABRICKS_SPARK_VERSION", "PF_DATABRICKS_NODE_TYPE")
_NUM_WORKERS = "PF_DATABRICKS_NUM_WORKERS"
_PACKAGE_DIR = "PF_DATABRICKS_PACKAGE_DIR"
# Set by the Databricks runtime on every cluster node.
_ON_CLUSTER = "DATABRICKS_RUNTIME_VERSION"

# Non-secret object-store settings passed to delta-rs as storage options when set. Credentials are
# deliberately absent: delta-rs reads AWS_ACCESS_KEY_ID, AZURE_STORAGE_ACCOUNT_KEY, ... from the
# environment itself, so they never enter Dagster config. (delta-rs 1.x commits to S3 with
# conditional writes; it needs no DynamoDB locking settings.)
STORAGE_OPTION_ENV = ("AWS_REGION", "AWS_ENDPOINT_URL")
# Settings that change the definitions themselves (the partitions' timezone) or the MLflow store.
_FORWARDED_OPTIONAL = (
    "PF_TIMEZONE",
    "PF_MLFLOW_TRACKING_URI",
    _CLUSTER_ID,
    *_NEW_CLUSTER,
    _NUM_WORKERS,
)

DEFAULT_MLFLOW_TRACKING_URI = "databricks"
DEFAULT_NUM_WORKERS = 1

# What the payout step imports beyond the Databricks runtime and the dagster libraries the
# launcher installs itself; pinned to this side's versions so both sides run the same code.
CLUSTER_LIBRARIES = (
    "deltalake",
    "duckdb",
    "sqlglot",
    "jinja2",
    "httpx",
    "tenacity",
    "aiolimiter",
    "simplejson",
    "msgspec",
    "pyyaml",
)

# Entries of the package directory that the launcher would zip and upload to DBFS with the code:
# the local lake, Dagster instance and sandbox key, a virtualenv, a dotenv file.
_NOT_SHIPPED = (".pf_home", ".venv", ".env")

_LAKE_SCHEMES = {"s3": "s3", "s3a": "s3", "abfss": "adls2", "gs": "gcs"}


class DatabricksProfileError(ValueError):
    """The environment does not configure the databricks profile; lists names, never values."""


@dataclass(frozen=True)
class DatabricksSettings:
    """Everything the databricks profile reads from the environment; no secret values.

    Attributes:
        secret_scope: the Databricks secret scope holding the payments key and storage keys.
        lake_root: the cloud URI of the lake.
        storage: ``s3``, ``adls2`` or ``gcs``, from the lake root's scheme.
        storage_account: the ADLS Gen2 account of an ``abfss://`` lake root, else None.
        storage_options: non-secret delta-rs storage options.
        api_base_url: the payments API; required, so nothing defaults to a live URL.
        mlflow_tracking_uri: the workspace's tracking server unless told otherwise.
        cluster: the launcher's ``cluster`` config, an existing cluster or a new one.
        package_dir: the directory holding the ``pf_platform`` package, shipped to the cluster.
        forwarded_env: non-secret variables set on the cluster so it rebuilds these settings.
    """

    secret_scope: str
    lake_root: str
    storage: str
    storage_account: str | None
    storage_options: dict[str, str]
    api_base_url: str
    mlflow_tracking_uri: str
    cluster: dict[str, Any]
    package_dir: Path
    forwarded_env: dict[str, str]


def databricks_settings(environ: Mapping[str, str] | None = None) -> DatabricksSettings:
    """Reads and checks the databricks profile's environment.

    Args:
        environ: the environment; ``os.environ`` when None.

    Returns:
        The settings.

    Raises:
        DatabricksProfileError: naming every missing or invalid variable at once.
    """
    env = os.environ if environ is None else environ
    on_cluster = _ON_CLUSTER in env
    missing = [name for name in (*_REQUIRED, _API_KEY) if not env.get(name)]
    # The launcher needs the token only where it submits runs; on the cluster the step is already
    # running and dagster-databricks stands in an empty token.
    if not on_cluster and not env.get(_TOKEN):
        missing.append(_TOKEN)
    problems: list[str] = []

    cluster: dict[str, Any] = {}
    if env.get(_CLUSTER_ID):
        cluster = {"existing": env[_CLUSTER_ID]}
    elif all(env.get(name) for name in _NEW_CLUSTER):
        workers = env.get(_NUM_WORKERS, str(DEFAULT_NUM_WORKERS))
        if not workers.isdigit():
            problems.append(f"{_NUM_WORKERS} must be a whole number")
        else:
            cluster = {
                "new": {
                    "size": {"num_workers": int(workers)},
                    "spark_version": env[_NEW_CLUSTER[0]],
                    "nodes": {"node_types": {"node_type_id": env[_NEW_CLUSTER[1]]}},
                }
            }
    else:
        missing.append(f"{_CLUSTER_ID} (or {' and '.join(_NEW_CLUSTER)} for a new cluster)")

    lake_root = env.get("PF_LAKE_ROOT", "")
    parsed = urlparse(lake_root)
    storage = _LAKE_SCHEMES.get(parsed.scheme, "")
    storage_account = None
    if lake_root and not storage:
        problems.append("PF_LAKE_ROOT must be a cloud URI (s3://, abfss:// or gs://)")
    if storage == "adls2":
        # abfss://<container>@<account>.dfs.core.windows.net/<path>
        container, _, host = parsed.netloc.partition("@")
        storage_account = host.split(".", 1)[0]
        if not (container and storage_account):
            problems.append(
                "PF_LAKE_ROOT must have the form abfss://<container>@<account>.dfs.core.windows.net"
            )

    package_dir = Path(env.get(_PACKAGE_DIR) or Path(pf_platform.__file__).parent.parent)
    if not on_cluster:
        problems.extend(_package_dir_problems(package_dir, env))

    if missing or problems:
        lines = []
        if missing:
            lines.append("missing environment variables: " + ", ".join(missing))
        lines.extend(problems)
        raise DatabricksProfileError(
            "the databricks profile is not configured: " + "; ".join(lines)
        )

    storage_options = {name: env[name] for name in STORAGE_OPTION_ENV if env.get(name)}
    forwarded = {
        "PF_PROFILE": PROFILE,
        **{name: env[name] for name in _REQUIRED},
        **{name: env[name] for name in _FORWARDED_OPTIONAL if env.get(name)},
        **storage_options,
    }
    return DatabricksSettings(
        secret_scope=env["PF_DATABRICKS_SECRET_SCOPE"],
        lake_root=lake_root,
        storage=storage,
        storage_account=storage_account,
        storage_options=storage_options,
        api_base_url=env["PF_API_BASE_URL"],
        mlflow_tracking_uri=env.get("PF_MLFLOW_TRACKING_URI") or DEFAULT_MLFLOW_TRACKING_URI,
        cluster=cluster,
        package_dir=package_dir,
        forwarded_env=forwarded,
    )


def _package_dir_problems(package_dir: Path, env: Mapping[str, str]) -> list[str]:
    if not (package_dir / "pf_platform" / "__init__.py").is_file():
        return [f"{_PACKAGE_DIR} must be the directory that holds the pf_platform package"]
    # The launcher zips everything under the directory except a few patterns; refuse rather than
    # upload local state (the sandbox's treasury key among it) to DBFS.
    found = [name for name in _NOT_SHIPPED if (package_dir / name).exists()]
    home = Path(env.get("PF_HOME", ".pf_home")).resolve()
    if home.is_relative_to(package_dir.resolve()) and home.exists() and ".pf_home" not in found:
        found.append("PF_HOME")
    if found:
        listed = ", ".join(found)
        return [
            f"{_PACKAGE_DIR} (default: the project root) holds {listed}, which the step "
            + "launcher would upload to DBFS; point it at a clean copy of the project"
        ]
    return []


def _libraries() -> list[dict[str, Any]]:
    specs = []
    for name in CLUSTER_LIBRARIES:
        try:
            specs.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            # On the cluster the launcher's config is built but never submits anything.
            specs.append(name)
    return [{"pypi": {"package": spec}} for spec in specs]


def step_launcher_config(settings: DatabricksSettings) -> dict[str, Any]:
    """The ``databricks_pyspark_step_launcher`` config for the settings; holds no secret value.

    Args:
        settings: from :func:`databricks_settings`.

    Returns:
        Config for ``databricks_pyspark_step_launcher.configured``.
    """
    secrets = [{"name": "PF_API_KEY", "scope": settings.secret_scope, "key": API_KEY_SECRET}]
    storage: dict[str, Any] = {}
    if settings.storage == "s3":
        # The launcher exports these to AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY on the cluster,
        # where delta-rs picks them up.
        storage = {
            "s3": {
                "secret_scope": settings.secret_scope,
                "access_key_key": AWS_ACCESS_KEY_SECRET,
                "secret_key_key": AWS_SECRET_KEY_SECRET,
            }
        }
    elif settings.storage == "adls2":
        storage = {
            "adls2": {
                "secret_scope": settings.secret_scope,
                "storage_account_name": settings.storage_account,
                "storage_account_key_key": AZURE_ACCOUNT_KEY_SECRET,
            }
        }
        # The launcher sets the account key for Spark only; delta-rs reads it from the environment.
        secrets.append(
            {
                "name": "AZURE_STORAGE_ACCOUNT_KEY",
                "scope": settings.secret_scope,
                "key": AZURE_ACCOUNT_KEY_SECRET,
            }
        )
    # gs:// lakes authenticate through the cluster's service account: nothing to ship.

    config: dict[str, Any] = {
        "run_config": {
            "run_name": "pf_platform transfer step",
            "cluster": settings.cluster,
            "libraries": _libraries(),
        },
        "databricks_host": {"env": "DATABRICKS_HOST"},
        "databricks_token": {"env": _TOKEN},
        "secrets_to_env_variables": secrets,
        "env_variables": dict(settings.forwarded_env),
        "local_dagster_job_package_path": str(settings.package_dir),
    }
    if storage:
        config["storage"] = storage
    return config


def databricks_step_launcher(settings: DatabricksSettings) -> dg.ResourceDefinition:
    """The step launcher that runs a step on the cluster the settings name.

    Args:
        settings: from :func:`databricks_settings`.

    Returns:
        ``databricks_pyspark_step_launcher`` configured from the settings.
    """
    # Imported here so that the local profile does not pay for the Databricks SDK.
    from dagster_databricks import databricks_pyspark_step_launcher

    return databricks_pyspark_step_launcher.configured(step_launcher_config(settings))
