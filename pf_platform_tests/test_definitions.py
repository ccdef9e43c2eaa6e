"""The code location loads, in every profile that can load on one machine."""

from __future__ import annotations

import dagster as dg
import pytest

from pf_platform.definitions import build_definitions, build_resources

ASSETS = {
    "label_submissions",
    "validated_labels",
    "quarantined_labels",
    "agent_payout_summary",
    "payout_batches",
    "transfer_results",
    "agent_wallets",
    "escrows",
    "escrow_releases",
}


def test_local_definitions_load_with_the_contracted_assets():
    defs = build_definitions("local")
    graph = defs.resolve_asset_graph()
    assert {key.to_user_string() for key in graph.get_all_asset_keys()} == ASSETS
    job = defs.resolve_job_def("payout_job")
    assert job.partitions_def is not None
    assert job.partitions_def.get_partition_keys()[0] == "2026-11-01"
    for key in graph.get_all_asset_keys():
        if key.to_user_string() not in {"escrows", "escrow_releases"}:
            assert graph.get(key).freshness_policy is not None
    checks = {key.name for key in graph.asset_check_keys}
    assert {"check_label_in_set", "check_confidence_in_range", "check_ledger_settled"} <= checks


def test_workspace_module_exposes_defs():
    from pf_platform import definitions

    assert isinstance(definitions.defs, dg.Definitions)


def test_unknown_profile_is_refused(monkeypatch):
    monkeypatch.setenv("PF_PROFILE", "staging")
    from pf_platform.settings import profile

    with pytest.raises(ValueError, match="PF_PROFILE"):
        profile()


def test_payout_step_is_pooled_and_retried():
    defs = build_definitions("local")
    assert defs.resolve_assets_def("transfer_results").op.pool == "purple_flea_payouts"
    assert defs.resolve_job_def("payout_job").op_retry_policy.max_retries == 2


def test_pf_sql_engine_picks_the_sql_engine(monkeypatch):
    monkeypatch.delenv("PF_SQL_ENGINE", raising=False)
    assert build_resources("local")["sql_engine"].engine == "duckdb"
    monkeypatch.setenv("PF_SQL_ENGINE", "spark")
    assert build_resources("local")["sql_engine"].engine == "spark"
    monkeypatch.setenv("PF_SQL_ENGINE", "sqlite")
    with pytest.raises(ValueError, match="PF_SQL_ENGINE"):
        build_resources("local")
