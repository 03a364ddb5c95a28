"""Kinesis and DynamoDB Streams mappings: the adapters, the shard supervisor, the per-shard engine,
leases, checkpoints and windows."""
