"""The sandbox Purple Flea payments server: a real HTTP API over a SQLite double-entry ledger.

Modules: ``ledger`` (accounts, transfers, escrow, audit), ``faults`` (fault injection and the
rate limit), ``app`` (the Starlette routes), ``server`` (``serve`` and ``SandboxProcess``) and
``cli`` (``pf-platform sandbox serve``). Nothing is imported here, so importing the package
costs nothing; import from the modules.
"""
