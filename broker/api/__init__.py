"""The HTTP API on one port: Lambda's ESM and Invoke routes, metrics and health (README.md, "HTTP API (one port)")."""
