"""The dbt-like SQL models: one source in the Spark SQL dialect, run on DuckDB or Spark SQL."""
