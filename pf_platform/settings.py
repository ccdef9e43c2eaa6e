"""Where things live on disk, and which profile is active.

Only non-secret defaults are read here; secrets reach resources through ``dg.EnvVar``.
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_SANDBOX_PORT = 8765


def pf_home() -> Path:
    """The project-local home: Dagster instance, sandbox ledger, landing files and the lake."""
    return Path(os.getenv("PF_HOME", ".pf_home")).resolve()


def lake_root() -> str:
    """Root of the Delta tables, ``<lake_root>/<schema>/<table>``; a local path or a cloud URI."""
    return os.getenv("PF_LAKE_ROOT", str(pf_home() / "lake"))


def landing_root() -> Path:
    """Where label files land, one folder per day: ``<landing_root>/<yyyy-mm-dd>/``."""
    return Path(os.getenv("PF_LANDING_ROOT", str(pf_home() / "landing")))


def sandbox_dir() -> Path:
    """The sandbox's ledger database and its treasury key file."""
    return pf_home() / "sandbox"


def sandbox_url() -> str:
    """Base URL of the payments API; the local sandbox unless PF_API_BASE_URL says otherwise."""
    return os.getenv("PF_API_BASE_URL", f"http://127.0.0.1:{DEFAULT_SANDBOX_PORT}")


def profile() -> str:
    """The active profile, ``local`` (default) or ``databricks``."""
    value = os.getenv("PF_PROFILE", "local")
    if value not in ("local", "databricks"):
        raise ValueError(f"PF_PROFILE must be 'local' or 'databricks', not {value!r}")
    return value


def sql_engine() -> str:
    """The engine the SQL models run on in the local profile, ``duckdb`` (default) or ``spark``."""
    value = os.getenv("PF_SQL_ENGINE", "duckdb")
    if value not in ("duckdb", "spark"):
        raise ValueError(f"PF_SQL_ENGINE must be 'duckdb' or 'spark', not {value!r}")
    return value
