"""The payout core: money, idempotency keys, batching and the ledger protocol.

Nothing here imports Dagster, so Spark executors and tests use it directly.
"""
