"""Targets: HTTP services, Python callables, real Lambda functions."""
