"""Asynchronous invocation: a durable per-function queue in Redis and the workers that drain it."""
