"""The quarantine: what a stream mapping or an async invocation gave up, kept with its payload."""
