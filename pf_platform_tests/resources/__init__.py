"""Tests of the Dagster resources and the payments client."""
