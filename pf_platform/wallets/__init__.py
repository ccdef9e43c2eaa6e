"""Wallet snapshots: every agent's balances from the payments API, kept in agents.wallets.

The core imports no Dagster. ``sync`` lists the balances and MERGEs what changed, ``staging``
holds the listing on local disk meanwhile, ``table`` reads the table back as of a version or a
time and reads its change data feed, and ``cli`` puts both reads on the command line
(``pf-platform wallets``). Nothing is imported here, so the CLI starts without pyarrow.
"""
