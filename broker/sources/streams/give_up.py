"""What happens to stream records the rules give up (docs/aws-semantics.md, "Errors, throttles
and timeouts"): they are kept in the mapping's quarantine with their data, then Lambda's failure
record goes to the on-failure destination (retried until delivered: the shard waits, as Lambda's
does) or, without one, they are dropped and counted. Used for a batch's records and for a parked
key's oldest record alike."""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from broker.batching.envelope import records_event
from broker.clock import Clock
from broker.destinations.failure_records import s3_failure_key, stream_failure_record
from broker.destinations.sender import DestinationSender
from broker.errors import BrokerError
from broker.invoking.function import Function
from broker.observability.metrics import Metrics
from broker.quarantine.store import Quarantine, entry, last_error
from broker.retrying import retrying
from broker.sources.streams.service import StreamService
from broker.sources.streams.types import StreamMappingSpec
from broker.types import InvokeResult, StreamRecord

log = structlog.get_logger("broker.streams")


class FailurePath:
    def __init__(self, *, shard_id: str, service: StreamService, spec: StreamMappingSpec, function: Function,
                 sender: DestinationSender, quarantine: Quarantine | None, metrics: Metrics, clock: Clock,
                 sleep: Callable[[float], Awaitable[bool]], backoff: Callable[[int], float]) -> None:
        self._shard_id = shard_id
        self._service = service
        self._spec = spec
        self._function = function
        self._sender = sender
        self._quarantine = quarantine
        self._clock = clock
        self._sleep = sleep  # False once the shard stops: Stopped
        self._backoff = backoff
        labels = (function.name, spec.uuid)
        self._m_dropped = metrics.dropped_events.labels(*labels)
        self._m_delivered = metrics.on_failure_destination_delivered_events.labels(*labels)
        self._m_delivery_failures = metrics.destination_delivery_failures.labels(function.name)

    async def send_off(self, records: list[StreamRecord], condition: str, *, invokes: int, request_id: str,
                       last: InvokeResult | None, response: dict[str, Any] | None, trace: str = "") -> None:
        """The quarantine (with the records), then the destination record or a counted drop.
        ``retrying.Stopped`` if the shard stops while Redis or the destination is away."""
        await self._quarantined(records, condition, invokes, last)
        destination = self._spec.destination
        if not destination:
            self._m_dropped.inc(len(records))
            log.warning("records_dropped", condition=condition, records=len(records),
                        first=records[0].sequence, last=records[-1].sequence)
            return
        now = self._clock.time()
        document = stream_failure_record(
            kind=self._service.kind, request_id=request_id or str(uuid.uuid4()),
            # Records already too old when read were never invoked, yet AWS counts them as 1.
            function_arn=self._function.arn, condition=condition, invoke_count=max(1, invokes),
            response=response, timestamp=now, shard_id=self._shard_id,
            first=(records[0].sequence, records[0].arrival), last=(records[-1].sequence, records[-1].arrival),
            batch_size=len(records), stream_arn=self._service.arn)
        s3_key = None
        if destination.startswith("arn:aws:s3:"):
            payload = records_event(r.encoded for r in records)
            document = {**document, "payload": json.loads(payload)}
            s3_key = s3_failure_key(self._spec.uuid, self._shard_id, now)

        def failed(error: BaseException, _n: int, _s: float) -> None:
            self._m_delivery_failures.inc()
            log.warning("destination_delivery_failed", destination=destination, error=str(error))

        await retrying(lambda: self._sender.deliver(destination, document, s3_key=s3_key, trace=trace),
                       pause=self._sleep, retryable=lambda e: isinstance(e, BrokerError),
                       delay=lambda n, _: self._backoff(n), before_wait=failed)
        self._m_delivered.inc(len(records))
        log.info("sent_to_destination", destination=destination, condition=condition, records=len(records),
                 first=records[0].sequence, last=records[-1].sequence)

    async def _quarantined(self, records: list[StreamRecord], condition: str, invokes: int,
                           last: InvokeResult | None) -> None:
        """Keep the given-up records with their data, retried until stored (the shard waits)."""
        if self._quarantine is None:
            return
        now = self._clock.time()
        error = last_error(last.payload, last.function_error, last.target_status) if last else None
        entries = [entry(id_=f"{self._shard_id}:{r.sequence}", reason=condition, attempts=invokes,
                         quarantined_at=now, last_error=error, record=r.record, ShardId=self._shard_id,
                         SequenceNumber=r.sequence, PartitionKey=r.key) for r in records]
        quarantine = self._quarantine
        await retrying(lambda: quarantine.add(entries), pause=self._sleep,
                       retryable=lambda e: isinstance(e, BrokerError) and e.retryable,
                       delay=lambda n, _: self._backoff(n),
                       before_wait=lambda e, _n, _s: log.warning("quarantine_unavailable", error=str(e)))

