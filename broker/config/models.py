"""The config file's shape (README.md, "Configuration reference").

Broker settings are snake_case with units in their names; everything that mirrors an AWS resource
keeps AWS's PascalCase names and ranges so users can paste from the Lambda API, CloudFormation or
SAM. Ranges come from docs/aws-semantics.md, "Mapping parameters"; cross-field rules live in
``rules.py``.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


# --------------------------------------------------------------------------- broker settings


class ApiCredential(_Strict):
    """One SigV4 key of the API: its secret (inline or from a file) and what it may do."""

    AccessKeyId: Annotated[str, Field(min_length=3, max_length=128, pattern=r"^[\w+=,.@-]+$")]
    SecretAccessKey: Annotated[str | None, Field(min_length=1)] = None
    SecretAccessKeyFile: Path | None = None
    Actions: Annotated[list[Annotated[str, Field(pattern=r"^(\*|lambda:[A-Za-z*?]+|broker:[A-Za-z*?]+)$")]],
                       Field(min_length=1)] = [
        "lambda:*"]
    Resources: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)] = ["*"]

    @model_validator(mode="after")
    def _one_secret(self) -> ApiCredential:
        if (self.SecretAccessKey is None) == (self.SecretAccessKeyFile is None):
            raise ValueError("give exactly one of SecretAccessKey, SecretAccessKeyFile")
        return self


class ApiSettings(_Strict):
    host: str = "127.0.0.1"  # the chart sets 0.0.0.0 (with credentials) so the Service reaches the pod
    port: Annotated[int, Field(ge=0, le=65535)] = 9000
    # sigv4: every Lambda route is signed (AWS SDKs and CLI do it); none: no authentication.
    # Default: sigv4 when credentials are given, none on a loopback host, else a config error.
    auth: Literal["sigv4", "none"] | None = None
    credentials: list[ApiCredential] = []
    allow_unauthenticated_network: bool = False  # with auth: none on a non-loopback host

    @property
    def authenticated(self) -> bool:
        return self.auth == "sigv4" or (self.auth is None and bool(self.credentials))

    @property
    def loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


class TracingSettings(_Strict):
    """OpenTelemetry spans (the ``otel`` extra). Off unless ``exporter: otlp`` here or
    ``OTEL_TRACES_EXPORTER=otlp`` in the environment; the other ``OTEL_*`` variables apply too."""

    exporter: Literal["none", "otlp"] = "none"
    endpoint: str | None = None  # OTLP/HTTP, e.g. http://collector:4318 (None: OTEL_EXPORTER_OTLP_ENDPOINT)
    sample_ratio: Annotated[float, Field(ge=0, le=1)] = 1.0  # of new traces; a caller's sampled flag wins
    service_name: str = "broker"


class BrokerSettings(_Strict):
    region: str = "us-east-1"
    # Empty: the account of the broker's credentials, asked from STS once at start if the config
    # talks to AWS (else, and for the embedded emulator, 000000000000). An explicit value wins.
    account_id: Annotated[str, Field(pattern=r"^(\d{12})?$")] = ""
    aws_endpoint_url: str | None = None  # None: real AWS; "embedded": in-process emulator
    redis_url: str = "redis://localhost:6379/0"  # or "embedded": a private redis-server
    data_dir: Path = Path(".broker")
    embedded_aws_port: Annotated[int, Field(ge=0, le=65535)] = 4566  # embedded emulator (taken: any free port)
    api: ApiSettings = ApiSettings()
    tracing: TracingSettings = TracingSettings()
    account_concurrency: Annotated[int, Field(ge=1)] = 1000
    drain_timeout_seconds: Annotated[float, Field(ge=0)] = 25.0
    replica_id: str | None = None  # default: the host name (the pod name in Kubernetes)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "json", "console"] = "auto"
    # Timings AWS fixes; settings so tests compress time instead of sleeping through it.
    sqs_wait_time_seconds: Annotated[int, Field(ge=0, le=20)] = 20
    sqs_initial_pollers: Annotated[int, Field(ge=1, le=1250)] = 5
    sqs_min_pollers: Annotated[int, Field(ge=1, le=1250)] = 2
    sqs_max_pollers: Annotated[int, Field(ge=1, le=1250)] = 1250
    sqs_scale_up_per_minute: Annotated[int, Field(ge=1)] = 300
    retry_backoff_base_seconds: Annotated[float, Field(gt=0)] = 1.0
    retry_backoff_max_seconds: Annotated[float, Field(gt=0)] = 300.0
    heartbeat_interval_seconds: Annotated[float, Field(gt=0)] = 10.0
    status_interval_seconds: Annotated[float, Field(gt=0)] = 2.0  # this replica's view on the status board
    lease_ttl_seconds: Annotated[float, Field(gt=0)] = 30.0  # a crashed replica's shards move after this
    permit_ttl_seconds: Annotated[float, Field(gt=0)] = 30.0  # renewed every third of it while work runs
    config_reload_interval_seconds: Annotated[float, Field(gt=0)] = 5.0  # how often the config file is checked
    kinesis_poll_interval_seconds: Annotated[float, Field(gt=0)] = 1.0  # idle shard, like Lambda
    dynamodb_poll_interval_seconds: Annotated[float, Field(gt=0)] = 0.25  # 4 per second, like Lambda
    stream_idle_poll_max_seconds: Annotated[float, Field(ge=0)] = 0.0  # 0: like Lambda, never slow down
    # A tumbling window that no later record closes gets its final invocation this long after its end
    # (Lambda: "waits up to 2 minutes").
    tumbling_window_close_seconds: Annotated[float, Field(ge=0, le=120)] = 120.0
    # Records read ahead and not yet handled, all stream shards of the replica together (each shard
    # also stops at 8 MiB; one with nothing buffered may always read).
    stream_prefetch_max_mib: Annotated[int, Field(ge=1)] = 64
    kinesis_min_read_interval_seconds: Annotated[float, Field(ge=0)] = 0.2  # 5 GetRecords/s/shard
    stream_discovery_interval_seconds: Annotated[float, Field(gt=0)] = 60.0
    # GetRecords signed with botocore's signer and sent with aiohttp (every other call stays on
    # aiobotocore): about a third of the CPU per idle poll; false falls back to aiobotocore's client.
    stream_lean_get_records: bool = True
    async_retry_delays_seconds: Annotated[list[float], Field(min_length=1)] = [60.0, 120.0]  # after errors 1, 2
    async_concurrency: Annotated[int, Field(ge=1, le=1000)] = 32  # per function and replica
    async_claim_idle_seconds: Annotated[float, Field(gt=0)] = 60.0  # + Timeout: a dead worker's event is retaken
    quarantine_retention_seconds: Annotated[int, Field(ge=60)] = 14 * 24 * 3600  # given-up records are kept this long
    quarantine_max_records: Annotated[int, Field(ge=1)] = 100_000  # per mapping or function; the oldest leave first
    # Execution environments (Runtime and Handler targets), per function and replica
    runtime_max_environments: Annotated[int, Field(ge=1, le=1000)] = 32  # unless ReservedConcurrentExecutions is lower
    runtime_idle_seconds: Annotated[float, Field(gt=0)] = 300.0  # an idle managed environment above provisioned retires
    runtime_init_timeout_seconds: Annotated[float, Field(gt=0)] = 10.0  # Lambda's init phase limit


# --------------------------------------------------------------------------- functions


class EnvironmentSpec(_Strict):
    Variables: dict[str, str] = {}


class RuntimeSpec(_Strict):
    """Execution environments that pull invocations through this function's Runtime API."""

    # The function's shared Runtime API port for external environments (0 = pick one, logged);
    # none: managed environments only (each gets a loopback port of its own).
    ApiPort: Annotated[int | None, Field(ge=0, le=65535)] = None
    Command: Annotated[list[Annotated[str, Field(min_length=1)]] | None, Field(min_length=1)] = None
    WorkingDirectory: Path | None = None
    Environment: EnvironmentSpec = EnvironmentSpec()

    @model_validator(mode="after")
    def _some_environment(self) -> RuntimeSpec:
        if self.Command is None and self.ApiPort is None:
            raise ValueError("give Command (managed environments), ApiPort (external ones), or both")
        return self


class TargetSpec(_Strict):
    """Exactly one of: an HTTP endpoint, an importable Python callable, a real Lambda function,
    execution environments speaking the Runtime API."""

    Url: str | None = None
    Handler: Annotated[str | None, Field(pattern=r"^[\w.]+:[\w.]+$")] = None
    # A Handler runs in managed environments through awslambdaric (module state per environment, a
    # timeout stops it); InProcess: true calls it in the broker's own process instead (faster, shared).
    InProcess: bool = False
    Lambda: Annotated[str | None, Field(pattern=r"^arn:aws[\w-]*:lambda:[\w-]*:\d*:function:[\w-]+(:[\w$-]+)?$")] = None
    EndpointUrl: str | None = None  # with Lambda: any Lambda-compatible endpoint (another broker); default AWS
    Runtime: RuntimeSpec | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> TargetSpec:
        given = [k for k in ("Url", "Handler", "Lambda", "Runtime") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError("give exactly one of Url, Handler, Lambda, Runtime")
        if self.EndpointUrl and not self.Lambda:
            raise ValueError("EndpointUrl goes with Lambda")
        if self.InProcess and not self.Handler:
            raise ValueError("InProcess goes with Handler")
        if self.Handler and not self.InProcess and "." in self.Handler.partition(":")[2]:
            raise ValueError("a Handler run in execution environments is module:function (awslambdaric's form)")
        return self


class DestinationRef(_Strict):
    Destination: Annotated[str, Field(max_length=350)] = ""


class DestinationConfigSpec(_Strict):
    OnSuccess: DestinationRef | None = None
    OnFailure: DestinationRef | None = None


class EventInvokeConfigSpec(_Strict):
    MaximumRetryAttempts: Annotated[int, Field(ge=0, le=2)] = 2
    MaximumEventAgeInSeconds: Annotated[int, Field(ge=60, le=21600)] = 21600
    DestinationConfig: DestinationConfigSpec | None = None


class DeadLetterConfigSpec(_Strict):
    TargetArn: str = ""


class ProvisionedConcurrencySpec(_Strict):
    ProvisionedConcurrentExecutions: Annotated[int, Field(ge=1)]


class FunctionConfig(_Strict):
    Target: TargetSpec
    Timeout: Annotated[int, Field(ge=1, le=900)] = 3  # seconds, Lambda's default
    MemorySize: Annotated[int, Field(ge=128, le=10240)] = 128  # MB, told to execution environments
    Environment: EnvironmentSpec = EnvironmentSpec()  # variables of its execution environments
    # SAM's shape: this many execution environments kept initialised (Runtime and Handler targets)
    ProvisionedConcurrencyConfig: ProvisionedConcurrencySpec | None = None
    ReservedConcurrentExecutions: Annotated[int | None, Field(ge=0)] = None
    Role: str | None = None  # shown as invokeIdentityArn in stream records
    Description: str = ""
    EventInvokeConfig: EventInvokeConfigSpec = EventInvokeConfigSpec()
    DeadLetterConfig: DeadLetterConfigSpec | None = None


# --------------------------------------------------------------------------- event source mappings


class FilterSpec(_Strict):
    Pattern: Annotated[str, Field(max_length=4096)]


class FilterCriteriaSpec(_Strict):
    Filters: Annotated[list[FilterSpec], Field(max_length=10)] = []


class ScalingConfigSpec(_Strict):
    MaximumConcurrency: Annotated[int | None, Field(ge=2, le=1000)] = None


class MetricsConfigSpec(_Strict):
    Metrics: Annotated[
        list[Literal["EventCount", "ErrorCount", "KafkaMetrics"]], Field(max_length=3)
    ] = []


class EventSourceMapping(_Strict):
    """One mapping, in AWS's CreateEventSourceMapping vocabulary. ``None`` means "AWS's default
    for this source"; ``rules.apply_defaults`` fills those in once the source is known."""

    UUID: Annotated[str | None, Field(min_length=1, max_length=36)] = None
    FunctionName: Annotated[str, Field(min_length=1, max_length=256)]
    EventSourceArn: str
    Enabled: bool = True
    BatchSize: Annotated[int | None, Field(ge=1, le=10000)] = None
    MaximumBatchingWindowInSeconds: Annotated[int | None, Field(ge=0, le=300)] = None
    StartingPosition: Literal["TRIM_HORIZON", "LATEST", "AT_TIMESTAMP"] | None = None
    StartingPositionTimestamp: float | None = None
    ParallelizationFactor: Annotated[int | None, Field(ge=1, le=10)] = None
    MaximumRetryAttempts: Annotated[int | None, Field(ge=-1, le=10000)] = None
    MaximumRecordAgeInSeconds: Annotated[int | None, Field(ge=-1, le=604800)] = None
    BisectBatchOnFunctionError: bool | None = None
    DestinationConfig: DestinationConfigSpec | None = None
    TumblingWindowInSeconds: Annotated[int | None, Field(ge=0, le=900)] = None
    # The broker's own (not Lambda's): a failing record parks its key only, the shard goes on
    IsolateFailingKeys: bool | None = None
    FunctionResponseTypes: Annotated[
        list[Literal["ReportBatchItemFailures"]], Field(max_length=1)
    ] = []
    FilterCriteria: FilterCriteriaSpec | None = None
    ScalingConfig: ScalingConfigSpec | None = None
    MetricsConfig: MetricsConfigSpec | None = None
    KMSKeyArn: str | None = None
    Tags: dict[str, str] = {}

    @property
    def report_batch_item_failures(self) -> bool:
        return "ReportBatchItemFailures" in self.FunctionResponseTypes


# --------------------------------------------------------------------------- local development aids


class LocalQueue(_Strict):
    QueueName: str
    Attributes: dict[str, str] = {}


class LocalStream(_Strict):
    StreamName: str
    ShardCount: Annotated[int, Field(ge=1, le=64)] = 1


class LocalTable(_Strict):
    TableName: str
    HashKey: str = "id"
    StreamViewType: Literal["KEYS_ONLY", "NEW_IMAGE", "OLD_IMAGE", "NEW_AND_OLD_IMAGES"] = (
        "NEW_AND_OLD_IMAGES"
    )


class LocalProducer(_Strict):
    """Every ``interval_seconds``: an order to the queue, a click to the stream, a cart to the table."""

    QueueName: str | None = None
    StreamName: str | None = None
    TableName: str | None = None
    interval_seconds: Annotated[float, Field(gt=0)] = 2.0


class LocalResources(_Strict):
    """Resources created at start (idempotently) and a demo producer: for the embedded emulator."""

    queues: list[LocalQueue] = []
    streams: list[LocalStream] = []
    tables: list[LocalTable] = []
    producer: LocalProducer | None = None


class Config(_Strict):
    broker: BrokerSettings = BrokerSettings()
    functions: dict[Annotated[str, Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")], FunctionConfig] = {}
    event_source_mappings: list[EventSourceMapping] = []
    local: LocalResources | None = None
