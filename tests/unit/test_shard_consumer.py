"""The shard consumer against an in-memory stream twin: expired iterators are re-opened after the
last record read (nothing lost, nothing repeated), and a closed shard ends with SHARD_END."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from broker.clock import SystemClock
from broker.errors import AwsError
from broker.invoking.function import Function
from broker.observability.metrics import Metrics
from broker.sources.streams.checkpoints import SHARD_END
from broker.sources.streams.service import ReadResult
from broker.sources.streams.shard_consumer import ShardConsumer, ShutdownReason
from broker.sources.streams.shard_reader import idle_pause
from broker.sources.streams.types import PrefetchBudget, StreamMappingSpec, StreamSettings
from broker.types import InvokeContext, InvokeResult, ShardInfo, SourceKind, StreamRecord


class StreamTwin:
    """A one-shard stream whose iterators expire after ``expire_after`` reads."""

    kind = SourceKind.KINESIS
    arn = "arn:aws:kinesis:us-east-1:000000000000:stream/twin"
    max_records_per_read = 3
    data_key = "data"

    def __init__(self, count: int, *, expire_after: int, closed: bool = False, pad: int = 0) -> None:
        self.records = [str(100 + i) for i in range(count)]
        self.pad = pad  # bytes of data per record
        self.expire_after = expire_after
        self.closed = closed
        self.opened: list[tuple[str, str | None]] = []
        self._reads = 0

    def filter_view(self, record: StreamRecord) -> tuple[Any, bool]:
        return record.data, False

    async def shards(self) -> list[ShardInfo]:
        return [ShardInfo("shard-0", (), self.records[-1] if self.closed else None)]

    async def iterator(self, shard_id: str, position: str, *, sequence: str | None = None,
                       timestamp: float | None = None) -> str:
        self.opened.append((position, sequence))
        start = 0 if position == "TRIM_HORIZON" else self.records.index(sequence or "") + 1
        return str(start)

    async def read(self, shard_id: str, iterator: str, limit: int) -> ReadResult:
        self._reads += 1
        if self._reads % self.expire_after == 0:
            raise AwsError("ExpiredIteratorException", "Iterator expired")
        start = int(iterator)
        chunk = self.records[start:start + min(limit, self.max_records_per_read)]
        end = start + len(chunk)
        nxt = None if self.closed and end >= len(self.records) else str(end)
        return ReadResult([_record(s, self.pad) for s in chunk], nxt)

    @property
    def reads(self) -> int:
        return self._reads


def _record(seq: str, pad: int = 0) -> StreamRecord:
    record = {"kinesis": {"sequenceNumber": seq, "partitionKey": "k", "data": "x" * pad}}
    return StreamRecord(seq, "k", 0.0, record, json.dumps(record).encode())


class Recorder:
    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def invoke(self, payload: bytes, ctx: InvokeContext, limit_seconds: float) -> InvokeResult:
        await self.gate.wait()
        self.batches.append([r["kinesis"]["sequenceNumber"] for r in json.loads(payload)["Records"]])
        return InvokeResult(b"{}")


class MemoryCheckpoints:
    def __init__(self) -> None:
        self.values: dict[str, str] = {}

    async def get(self, shard_id: str) -> str | None:
        return self.values.get(shard_id)

    async def put(self, shard_id: str, sequence: str, fence: object = None) -> bool:
        self.values[shard_id] = sequence
        return True


def consumer(stream: StreamTwin, target: Recorder, checkpoints: MemoryCheckpoints,
             checkpoint: str | None = None, budget: PrefetchBudget | None = None) -> ShardConsumer:
    spec = StreamMappingSpec(uuid="u", batch_size=2, window_seconds=0, parallelization=1, max_retry_attempts=-1,
                             max_record_age_seconds=-1, bisect=False, report_batch_item_failures=False,
                             destination=None, starting_position="TRIM_HORIZON", starting_timestamp=None, filter=None)
    metrics = Metrics()
    fn = Function(name="f", arn="arn:aws:lambda:us-east-1:000000000000:function:f", timeout=5, invoker=target,
                  metrics=metrics, clock=SystemClock())
    settings = StreamSettings(poll_interval_seconds=0.01, min_read_interval_seconds=0, backoff_base_seconds=0.01,
                              backoff_max_seconds=0.01)
    return ShardConsumer(shard=ShardInfo("shard-0", (), stream.records[-1] if stream.closed else None),
                         service=stream, spec=spec, function=fn, checkpoints=checkpoints,  # type: ignore[arg-type]
                         sender=None, metrics=metrics, clock=SystemClock(), settings=settings,  # type: ignore[arg-type]
                         start=("TRIM_HORIZON", None), checkpoint=checkpoint, budget=budget)


@pytest.mark.timeout(10)
async def test_expired_iterators_resume_after_the_last_record_read() -> None:
    """Every record exactly once, in order, though the iterator expires every other read."""
    stream = StreamTwin(11, expire_after=2, closed=True)
    target = Recorder()
    checkpoints = MemoryCheckpoints()
    reason = await consumer(stream, target, checkpoints).run()
    assert reason is ShutdownReason.SHARD_END
    assert [s for batch in target.batches for s in batch] == stream.records
    reopened = [seq for position, seq in stream.opened if position == "AFTER_SEQUENCE_NUMBER"]
    assert reopened
    assert all(seq in stream.records for seq in reopened)
    assert checkpoints.values == {"shard-0": SHARD_END}


@pytest.mark.timeout(10)
async def test_a_finished_shard_is_not_read_again() -> None:
    """A shard checkpointed SHARD_END ends at once."""
    stream = StreamTwin(3, expire_after=100, closed=True)
    checkpoints = MemoryCheckpoints()
    target = Recorder()
    assert await consumer(stream, target, checkpoints, checkpoint=SHARD_END).run() is ShutdownReason.SHARD_END
    assert target.batches == []
    assert stream.opened == []




@pytest.mark.timeout(10)
async def test_prefetch_stops_at_its_byte_bound() -> None:
    """Records of 3 MB: one read of three (9 MB) fills the prefetch bound, so while the function is
    busy no second read is made; once it answers, every record arrives in order."""
    stream = StreamTwin(7, expire_after=100, closed=True, pad=3 * 1024 * 1024)
    target = Recorder()
    target.gate.clear()
    task = asyncio.create_task(consumer(stream, target, MemoryCheckpoints()).run())
    await asyncio.sleep(0.3)
    assert stream.reads == 1
    target.gate.set()
    assert await task is ShutdownReason.SHARD_END
    assert [s for batch in target.batches for s in batch] == stream.records
    assert all(len(batch) == 1 for batch in target.batches)  # two would pass Lambda's 6 MB payload


@pytest.mark.timeout(10)
@pytest.mark.parametrize(("budget_mib", "reads"), [(None, 3), (4, 2)])
async def test_the_replicas_prefetch_budget_stops_reads_early(budget_mib: int | None, reads: int) -> None:
    """1 MB records, three a read, the function busy: alone a shard reads until it holds 8 MiB
    (three reads); a 4 MiB budget for the replica stops it after two. Nothing is left charged
    to the budget once the shard is done."""
    stream = StreamTwin(12, expire_after=100, closed=True, pad=1024 * 1024)
    target = Recorder()
    target.gate.clear()
    budget = PrefetchBudget(budget_mib * 1024 * 1024) if budget_mib else None
    task = asyncio.create_task(consumer(stream, target, MemoryCheckpoints(), budget=budget).run())
    await asyncio.sleep(0.3)
    assert stream.reads == reads
    target.gate.set()
    assert await task is ShutdownReason.SHARD_END
    assert [s for batch in target.batches for s in batch] == stream.records
    assert budget is None or budget.used == 0


@pytest.mark.timeout(10)
async def test_a_stopped_shard_hands_its_prefetch_back() -> None:
    stream = StreamTwin(12, expire_after=100, pad=1024 * 1024)
    target = Recorder()
    target.gate.clear()
    budget = PrefetchBudget(64 * 1024 * 1024)
    shard = consumer(stream, target, MemoryCheckpoints(), budget=budget)
    task = asyncio.create_task(shard.run())
    await asyncio.sleep(0.2)
    assert budget.used > 0
    shard.stop()
    target.gate.set()
    assert await task is ShutdownReason.REQUESTED
    assert budget.used == 0


def test_idle_pause_is_lambdas_interval_unless_a_cap_is_set() -> None:
    """Default: every empty read waits the poll interval; with a cap the pause doubles up to it."""
    default = StreamSettings(poll_interval_seconds=0.01)
    assert [idle_pause(default, n) for n in (1, 2, 5, 50)] == [0.01, 0.01, 0.01, 0.01]
    capped = StreamSettings(poll_interval_seconds=1.0, idle_poll_max_seconds=30.0)
    assert [idle_pause(capped, n) for n in (1, 2, 3, 5, 6, 50)] == [1.0, 2.0, 4.0, 16.0, 30.0, 30.0]
