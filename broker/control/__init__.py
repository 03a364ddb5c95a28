"""The mapping registry: mappings created through Lambda's API, kept in Redis for every replica."""
