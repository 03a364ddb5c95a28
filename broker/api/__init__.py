"""The HTTP API on one port: Lambda's ESM and Invoke routes, metrics and health (DESIGN §5)."""
