"""Event sources: SQS pollers (and, later, stream shard consumers)."""
