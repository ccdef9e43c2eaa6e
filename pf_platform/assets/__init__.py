"""Software-defined assets, one folder per domain."""
