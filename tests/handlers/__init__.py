"""Lambda handlers the tests run in execution environments (awslambdaric processes)."""
