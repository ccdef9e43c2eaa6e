"""Jobs over the asset graph."""

from __future__ import annotations

import dagster as dg

# Safe to retry: a re-run of the payout step looks up what it already sent before sending.
PAYOUT_RETRY_POLICY = dg.RetryPolicy(
    max_retries=2, delay=5, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
)

payout_job = dg.define_asset_job(
    "payout_job",
    selection=dg.AssetSelection.groups("labeling", "payouts"),
    op_retry_policy=PAYOUT_RETRY_POLICY,
    # The steps run one after another anyway; one process per run saves a Python start per step.
    executor_def=dg.in_process_executor,
    description="Ingest, validate and pay one day of label submissions.",
)
