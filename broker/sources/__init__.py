"""Event sources: SQS pollers (``sqs/``) and stream shard consumers (``streams/``), each run by a
``mapping.MappingRunner``, built by ``factory``."""
