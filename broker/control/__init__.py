"""The control plane: mappings created through Lambda's API (kept in Redis for every replica), what
the API sees of the mappings this replica runs (``local``), function tags."""
