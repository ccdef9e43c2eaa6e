"""Benchmarks, one module per feature, each runnable as ``python -m pf_platform.bench.<name>``.

Every benchmark starts its own sandbox in a temporary folder, so it never touches PF_HOME.
"""
