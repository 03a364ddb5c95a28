"""Logs and metrics: configured once, used everywhere."""
