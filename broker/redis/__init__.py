"""Redis: the client (one server, Cluster, Sentinel), the error boundary, the scripts, the
auto-pipeline, the key names and the heartbeat."""
