"""Sensors of the asset graph."""

from pf_platform.sensors.escrow import escrow_bounty_sensor, escrow_release_sensor

__all__ = ["escrow_bounty_sensor", "escrow_release_sensor"]
