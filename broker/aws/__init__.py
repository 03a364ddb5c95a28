"""AWS: the clients, the botocore error boundary, and the lean GetRecords path."""
