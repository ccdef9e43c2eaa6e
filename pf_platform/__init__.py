"""pf_platform: pay agents through the Purple Flea API from a Dagster asset graph."""
