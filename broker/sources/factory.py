"""Builds a mapping's source from the config: the queue or stream is checked first (an unreachable
AWS at start-up is waited out, a missing resource is a StartupError naming it), then the SQS pollers
or the stream supervisor, wired to Redis (checkpoints, leases) and the destinations."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import structlog

from broker.arns import parse_arn, source_kind
from broker.aws.clients import AwsClients, call
from broker.clock import Clock
from broker.config import wording
from broker.config.models import Config, EventSourceMapping
from broker.destinations.sender import DestinationSender
from broker.errors import AwsError, BrokerError, StartupError
from broker.invoking.function import Function
from broker.observability.metrics import Metrics
from broker.quarantine.store import Quarantines
from broker.redis.client import RedisClient
from broker.redis.pipeline import AutoPipeline
from broker.retrying import backoff_delay, retrying
from broker.sources.mapping import Source
from broker.sources.sqs.mapping import SqsMapping, SqsSettings
from broker.sources.streams.checkpoints import CheckpointStore
from broker.sources.streams.dynamodb import DynamoDBStreamsService
from broker.sources.streams.kinesis import KinesisService
from broker.sources.streams.leases import LeaseTable
from broker.sources.streams.parking import ParkedKeys
from broker.sources.streams.service import StreamService
from broker.sources.streams.supervisor import ShardSupervisor
from broker.sources.streams.types import PrefetchBudget, StreamSettings
from broker.types import ShardInfo, SourceKind

log = structlog.get_logger("broker.app")
T = TypeVar("T")


class SourceFactory:
    def __init__(self, *, config: Callable[[], Config], aws: AwsClients, redis: RedisClient, pipeline: AutoPipeline,
                 sender: DestinationSender, quarantines: Quarantines, metrics: Metrics, clock: Clock, replica: str,
                 prefetch: PrefetchBudget,
                 stopping: asyncio.Event) -> None:
        self._config = config  # the current config (a reload applies to the next mapping built)
        self._aws = aws
        self._redis = redis
        self._pipeline = pipeline
        self._sender = sender
        self._quarantines = quarantines
        self._metrics = metrics
        self._clock = clock
        self._replica = replica
        self._prefetch = prefetch  # shared by every stream mapping of the replica
        self._stopping = stopping

    async def build(self, esm: EventSourceMapping, function: Function, kind: SourceKind) -> Source:
        if kind is SourceKind.SQS:
            return await self._sqs(esm, function)
        return await self._stream(esm, function, kind)

    async def _sqs(self, esm: EventSourceMapping, function: Function) -> SqsMapping:
        sqs = await self._aws.client("sqs")
        arn = parse_arn(esm.EventSourceArn)
        async def describe() -> tuple[str, dict[str, str]]:
            url = (await call(sqs.get_queue_url, QueueName=arn.resource,
                              QueueOwnerAWSAccountId=arn.account))["QueueUrl"]
            return url, (await call(sqs.get_queue_attributes, QueueUrl=url,
                                    AttributeNames=["VisibilityTimeout"]))["Attributes"]

        try:
            url, attrs = await self.when_reachable(f"queue {esm.EventSourceArn}", describe)
        except AwsError as exc:
            raise self._missing(esm, SourceKind.SQS, exc) from exc
        visibility = int(attrs["VisibilityTimeout"])
        if function.timeout > visibility:
            raise StartupError(
                f"mapping {esm.UUID}: function {function.name} Timeout ({function.timeout:g} s) "
                f"exceeds the visibility timeout ({visibility} s) of queue {esm.EventSourceArn}; "
                "Lambda requires Timeout <= VisibilityTimeout (AWS recommends 6x)")
        s = self._config().broker
        return SqsMapping(
            esm=esm, function=function, sqs=sqs, queue_url=url, visibility_timeout=visibility,
            region=s.region, metrics=self._metrics, clock=self._clock,
            settings=SqsSettings(
                wait_time_seconds=s.sqs_wait_time_seconds, initial_pollers=s.sqs_initial_pollers,
                min_pollers=s.sqs_min_pollers, max_pollers=s.sqs_max_pollers,
                scale_up_per_minute=s.sqs_scale_up_per_minute,
                backoff_base_seconds=s.retry_backoff_base_seconds,
                backoff_max_seconds=s.retry_backoff_max_seconds))

    def _missing(self, esm: EventSourceMapping, kind: SourceKind, exc: AwsError) -> StartupError:
        """The queue or stream cannot be used: AWS's sentence for a missing one, after the field's path
        (a file mapping) or the mapping's UUID (an API mapping); AWS's own error follows for the log."""
        where = next((f"event_source_mappings[{n}].EventSourceArn"
                      for n, m in enumerate(self._config().event_source_mappings) if m.UUID == esm.UUID),
                     f"mapping {esm.UUID}")
        return StartupError(f"{where}: {wording.missing_source(kind, esm.EventSourceArn)} ({exc})")

    async def check(self, esm: EventSourceMapping) -> None:
        """One call that fails (AwsError) if the mapping's queue or stream does not exist."""
        kind = source_kind(esm.EventSourceArn)
        if kind is SourceKind.SQS:
            arn = parse_arn(esm.EventSourceArn)
            await call((await self._aws.client("sqs")).get_queue_url, QueueName=arn.resource,
                       QueueOwnerAWSAccountId=arn.account)
        else:
            await (await self._stream_service(esm, kind)).shards()

    async def shards(self, esm: EventSourceMapping) -> list[ShardInfo]:
        """The shards of a stream mapping's stream, as listed now (AwsError if it cannot be)."""
        return await (await self._stream_service(esm, source_kind(esm.EventSourceArn))).shards()

    async def _stream_service(self, esm: EventSourceMapping, kind: SourceKind) -> StreamService:
        s = self._config().broker
        if kind is SourceKind.KINESIS:
            role = self._config().functions[esm.FunctionName].Role or \
                f"arn:aws:iam::{s.account_id}:role/{esm.FunctionName}"
            return KinesisService(await self._aws.client("kinesis"), arn=esm.EventSourceArn,
                                  region=s.region, identity_arn=role, lean=await self._lean("kinesis"))
        return DynamoDBStreamsService(await self._aws.client("dynamodbstreams"),
                                      arn=await self._local_stream_arn(esm.EventSourceArn), region=s.region,
                                      lean=await self._lean("dynamodbstreams"))

    async def _stream(self, esm: EventSourceMapping, function: Function, kind: SourceKind) -> ShardSupervisor:
        assert esm.UUID is not None
        s = self._config().broker
        service = await self._stream_service(esm, kind)
        poll = s.kinesis_poll_interval_seconds if kind is SourceKind.KINESIS else s.dynamodb_poll_interval_seconds
        try:
            await self.when_reachable(f"stream {esm.EventSourceArn}", service.shards)
        except AwsError as exc:
            raise self._missing(esm, kind, exc) from exc
        return ShardSupervisor(
            esm=esm, function=function, service=service,
            checkpoints=CheckpointStore(self._redis, esm.UUID, self._pipeline),
            leases=LeaseTable(self._redis, esm.UUID, self._replica, s.lease_ttl_seconds), sender=self._sender,
            quarantine=self._quarantines.of_mapping(esm.UUID, function.name),
            metrics=self._metrics, clock=self._clock,
            settings=StreamSettings(
                poll_interval_seconds=poll, idle_poll_max_seconds=s.stream_idle_poll_max_seconds,
                min_read_interval_seconds=s.kinesis_min_read_interval_seconds if kind is SourceKind.KINESIS else 0,
                backoff_base_seconds=s.retry_backoff_base_seconds,
                backoff_max_seconds=s.retry_backoff_max_seconds,
                window_close_seconds=s.tumbling_window_close_seconds),
            discovery_interval_seconds=s.stream_discovery_interval_seconds, lease_ttl_seconds=s.lease_ttl_seconds,
            budget=self._prefetch, parking=functools.partial(
                ParkedKeys, self._redis, mapping_uuid=esm.UUID, clock=self._clock, metrics=self._metrics,
                labels=(function.name, esm.UUID)))

    async def _lean(self, service: str) -> Any:
        """GetRecords signed and sent without botocore's per-call machinery (unless turned off)."""
        if not self._config().broker.stream_lean_get_records:
            return None
        return await self._aws.lean(service, "GetRecords")

    async def _local_stream_arn(self, arn: str) -> str:
        """The embedded demo's ``.../stream/latest``: the table's current stream (its real ARN carries
        a creation time that changes with every fresh emulator). Any other ARN is used as given."""
        if not (self._config().local and arn.endswith("/stream/latest")):
            return arn
        table = arn.split(":table/", 1)[1].split("/", 1)[0]
        described = await call((await self._aws.client("dynamodb")).describe_table, TableName=table)
        return str(described["Table"]["LatestStreamArn"])

    async def when_reachable(self, what: str, probe: Callable[[], Awaitable[T]]) -> T:
        """``probe()``, retried with backoff while it fails with a retryable error (AWS unreachable
        or throttling at start-up); a non-retryable error (a missing queue) is the caller's."""
        s = self._config().broker

        async def pause(seconds: float) -> bool:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), seconds)
            return True  # the next failure ends it, once stopping

        return await retrying(
            probe, pause=pause,
            retryable=lambda e: isinstance(e, BrokerError) and e.retryable and not self._stopping.is_set(),
            delay=lambda n, _: backoff_delay(n, base=s.retry_backoff_base_seconds,
                                             cap=min(s.retry_backoff_max_seconds, 30)),
            before_wait=lambda e, _, seconds: log.warning("startup_waiting", what=what, error=str(e),
                                                          retry_in_seconds=round(seconds, 2)))

