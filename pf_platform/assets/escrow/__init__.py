"""Escrow: bonuses locked per bounty and released to the agents whose MLflow runs cross a target.

``escrows`` (escrow.escrows) locks one escrow per declared bounty and keeps its state;
``escrow_releases`` (escrow.releases) pays a winner, records all three money legs and tags the
winning MLflow run. Both are partitioned by bounty id (dynamic partitions ``escrows``).
"""

from pf_platform.assets.escrow.escrows import escrow_partitions, escrow_tables, escrows
from pf_platform.assets.escrow.jobs import escrow_release_job, escrows_job
from pf_platform.assets.escrow.releases import EscrowReleaseConfig, escrow_releases
from pf_platform.assets.escrow.resources import MlflowResource

ESCROW_ASSETS = [escrows, escrow_releases]

__all__ = [
    "ESCROW_ASSETS",
    "EscrowReleaseConfig",
    "MlflowResource",
    "escrow_partitions",
    "escrow_release_job",
    "escrow_releases",
    "escrow_tables",
    "escrows",
    "escrows_job",
]
