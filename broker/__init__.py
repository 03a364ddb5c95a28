"""broker: Lambda's event source mappings and asynchronous invocation, self-hosted."""

__version__ = "0.1.0"
