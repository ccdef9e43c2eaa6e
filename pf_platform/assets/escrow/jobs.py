"""Jobs of the escrow assets, one partition (bounty) per run; the escrow sensors launch them."""

from __future__ import annotations

import dagster as dg

escrows_job = dg.define_asset_job(
    "escrows_job",
    selection=["escrows"],
    description="Lock a declared bounty's escrow, or re-read its state (release, refund).",
)

# No op retry policy: a failed release is retried by the release sensor under a new run key,
# after it has looked at escrow.releases, and a refusal by the API is never retried.
escrow_release_job = dg.define_asset_job(
    "escrow_release_job",
    selection=["escrow_releases"],
    description="Release one bounty's escrow to one winner and tag the winning MLflow run.",
)
