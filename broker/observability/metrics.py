"""Every Prometheus metric the broker exports, declared once (README.md, "Metrics").

Lambda's CloudWatch metrics in snake_case. Labels are bounded: function names and mapping UUIDs
come from the config file, never from requests.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_FN = ("function",)
_ESM = ("function", "mapping")
_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)


class Metrics:
    """One instance per process (tests make their own, each with a fresh registry)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        # Function metrics
        self.invocations = Counter("broker_invocations", "Times a target ran (success or function error).", _FN, registry=r)
        self.errors = Counter("broker_errors", "Invocations that ended in a function error.", _FN, registry=r)
        self.throttles = Counter("broker_throttles", "Invocations refused by a throttle, by reason.", (*_FN, "reason"), registry=r)
        self.system_errors = Counter("broker_system_errors", "Targets that could not be reached (connection errors).", _FN, registry=r)
        self.duration = Histogram("broker_duration_seconds", "Time the target took per invocation.", _FN, buckets=_DURATION_BUCKETS, registry=r)
        self.concurrent_executions = Gauge("broker_concurrent_executions", "Invocations in flight in this replica.", _FN, registry=r)
        # Execution environments (Runtime and Handler targets)
        self.init_duration = Histogram("broker_init_duration_seconds", "Init phase of new execution environments (from start to their first next).", _FN, buckets=_DURATION_BUCKETS, registry=r)
        self.cold_starts = Counter("broker_cold_starts", "Invocations that were an environment's first (they waited for its init).", _FN, registry=r)
        self.warm_starts = Counter("broker_warm_starts", "Invocations that ran in an already initialised environment.", _FN, registry=r)
        self.runtime_pending = Gauge("broker_runtime_pending_invocations", "Invocations waiting for an execution environment (all replicas for a function with a shared Runtime API port; read at scrape time).", _FN, registry=r)
        self.init_failures = Counter("broker_init_failures", "Execution environments whose init failed (an init error or an exit before the first next).", _FN, registry=r)
        self.environments = Gauge("broker_environments", "Execution environments of this replica by state (initializing, idle, busy).", (*_FN, "state"), registry=r)
        # Event source mapping metrics
        self.polled_events = Counter("broker_polled_events", "Events read from the source.", _ESM, registry=r)
        self.filtered_out_events = Counter("broker_filtered_out_events", "Events removed by FilterCriteria.", _ESM, registry=r)
        self.invoked_events = Counter("broker_invoked_events", "Events sent to the target (retries count again).", _ESM, registry=r)
        self.failed_invoke_events = Counter("broker_failed_invoke_events", "Events in invocations that failed or reported item failures.", _ESM, registry=r)
        self.deleted_events = Counter("broker_deleted_events", "SQS messages deleted after processing.", _ESM, registry=r)
        self.dropped_events = Counter("broker_dropped_events", "Stream records dropped by age or retries.", _ESM, registry=r)
        self.on_failure_destination_delivered_events = Counter("broker_on_failure_destination_delivered_events", "Records sent to the on-failure destination.", _ESM, registry=r)
        self.stream_reads = Counter("broker_stream_reads", "GetRecords calls made for a stream mapping (idle polls included).", _ESM, registry=r)
        self.iterator_age = Gauge("broker_iterator_age_seconds", "Age of the last record of the last batch sent, per shard.", (*_ESM, "shard"), registry=r)
        self.pollers = Gauge("broker_sqs_pollers", "Concurrent SQS pollers running for a mapping.", _ESM, registry=r)
        self.permits_in_use = Gauge("broker_permits_in_use", "Concurrency permits held in the function's pool by all replicas (read from Redis at scrape time).", _FN, registry=r)
        self.permits_limit = Gauge("broker_permits_limit", "Size of the function's permit pool (reserved, or the account's unreserved pool).", _FN, registry=r)
        self.leases_owned = Gauge("broker_leases_owned", "Shard leases this replica holds for a stream mapping.", _ESM, registry=r)
        self.mapping_enabled = Gauge("broker_mapping_enabled", "1 while a mapping is enabled and running.", _ESM, registry=r)
        self.returned_events = Counter("broker_returned_events", "SQS messages made visible again at shutdown or pause.", _ESM, registry=r)
        # Async invocation and destinations
        self.async_events_received = Counter("broker_async_events_received", "Events queued for async processing.", _FN, registry=r)
        self.async_event_age = Histogram("broker_async_event_age_seconds", "Time from queueing to invocation.", _FN, buckets=_DURATION_BUCKETS, registry=r)
        self.async_events_dropped = Counter("broker_async_events_dropped", "Async events dropped without a successful run, by reason.", (*_FN, "reason"), registry=r)
        # The quarantine (mapping "" for a function's async events)
        self.quarantined = Counter("broker_quarantined_records", "Records and async events given up and kept in the quarantine with their payload.", _ESM, registry=r)
        self.quarantine_replays = Counter("broker_quarantine_replays", "Quarantine entries replayed, by outcome (queued: an async event queued again; succeeded, failed: a stream record invoked).", (*_ESM, "outcome"), registry=r)
        self.parked_keys = Gauge("broker_parked_keys", "Keys of a stream mapping parked after a failure (IsolateFailingKeys), on the shards this replica holds.", _ESM, registry=r)
        self.parked_records = Gauge("broker_parked_records", "Records waiting behind a parked key (IsolateFailingKeys), on the shards this replica holds.", _ESM, registry=r)
        self.quarantine_evicted = Counter("broker_quarantine_evicted_records", "Quarantine entries that left by its bounds (age or count), oldest first.", _ESM, registry=r)
        self.destination_delivery_failures = Counter("broker_destination_delivery_failures", "Failed attempts to write to a destination.", _FN, registry=r)
        self.async_queue_depth = Gauge("broker_async_queue_depth", "Async events queued or waiting for a retry, per function.", _FN, registry=r)
        self.dead_letter_errors = Counter("broker_dead_letter_errors", "Failed attempts to write to the DLQ.", _FN, registry=r)
        # Process
        self.trace_spans_dropped = Counter("broker_trace_spans_dropped", "Spans the OTLP exporter could not deliver (the collector away or refusing).", registry=r)
        self.auth_failures = Counter("broker_auth_failures", "API requests refused by SigV4 authentication or permissions, by reason.", ("reason",), registry=r)
        self.state_lost = Counter("broker_state_lost", "Times Redis answered without state the broker had written (what: redis, consumer_group, checkpoint).", ("what",), registry=r)
        self.config_reload_failures = Counter("broker_config_reload_failures", "Config reloads refused as invalid.", registry=r)
