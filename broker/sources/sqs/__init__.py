"""SQS mappings: the pollers and the queue calls."""
