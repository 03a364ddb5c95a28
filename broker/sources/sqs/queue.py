"""One SQS queue's API calls for a mapping: receive (one or many at once), delete in batches of 10
with retries, and give messages back (ChangeMessageVisibility 0)."""

from __future__ import annotations

import asyncio
from typing import Any

import structlog

from broker.aws.clients import call
from broker.clock import Clock
from broker.errors import BrokerError
from broker.types import SqsMessage

MAX_RECEIVE = 10
_MAX_PARALLEL_RECEIVES = 10
_DELETE_ATTEMPTS = 3
log = structlog.get_logger("broker.sqs")


class SqsQueue:
    def __init__(self, sqs: Any, queue_url: str, *, clock: Clock, deleted: Any, returned: Any) -> None:
        self._sqs = sqs
        self._queue_url = queue_url
        self._clock = clock
        self._m_deleted = deleted
        self._m_returned = returned

    async def probe(self) -> None:
        await call(self._sqs.get_queue_attributes, attempts=1, QueueUrl=self._queue_url,
                   AttributeNames=["VisibilityTimeout"])

    async def receive(self, count: int, wait: int) -> list[dict[str, Any]]:
        response = await call(
            self._sqs.receive_message,
            QueueUrl=self._queue_url,
            MaxNumberOfMessages=count,
            WaitTimeSeconds=wait,
            MessageSystemAttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        messages: list[dict[str, Any]] = response.get("Messages", [])
        return messages

    async def receive_many(self, want: int, wait: int) -> list[dict[str, Any]]:
        """Fill a large batch from a deep queue with concurrent receives of 10 (one round trip,
        not BatchSize/10 of them)."""
        asks = [min(MAX_RECEIVE, want - start) for start in range(0, min(want, _MAX_PARALLEL_RECEIVES * 10), 10)]
        if len(asks) == 1:
            return await self.receive(asks[0], wait)
        results = await asyncio.gather(*(self.receive(n, wait) for n in asks), return_exceptions=True)
        received = [m for batch in results if isinstance(batch, list) for m in batch]
        failed = [e for e in results if isinstance(e, BaseException)]
        if failed and not received:
            raise failed[0]
        return received  # messages of the receives that worked are never dropped for one that failed

    async def delete(self, messages: list[SqsMessage]) -> None:
        if not messages:  # every message of the batch was reported as failed
            return
        if len(messages) <= 10:
            await self._delete_chunk(messages)
            return
        await asyncio.gather(*(self._delete_chunk(messages[i:i + 10]) for i in range(0, len(messages), 10)))

    async def _delete_chunk(self, chunk: list[SqsMessage]) -> None:
        entries = {str(i): m.receipt_handle for i, m in enumerate(chunk)}
        for attempt in range(_DELETE_ATTEMPTS):
            try:
                response = await call(
                    self._sqs.delete_message_batch, QueueUrl=self._queue_url,
                    Entries=[{"Id": k, "ReceiptHandle": v} for k, v in entries.items()])
            except BrokerError as exc:
                log.warning("delete_failed", records=len(entries), error=str(exc))
                return
            for ok in response.get("Successful", []):
                entries.pop(ok["Id"], None)
            self._m_deleted.inc(len(response.get("Successful", [])))
            if not entries:
                return
            failed = response.get("Failed", [])
            if failed and all(f.get("SenderFault") for f in failed):
                break  # a stale receipt handle will not get better by retrying
            await self._clock.sleep(0.1 * (attempt + 1))
        log.warning("delete_failed", records=len(entries),
                    reasons=sorted({f.get("Code", "") for f in response.get("Failed", [])}))

    async def make_visible(self, messages: list[SqsMessage]) -> None:
        """Give unprocessed messages back to the queue at once (ChangeMessageVisibility 0)."""
        for start in range(0, len(messages), 10):
            chunk = messages[start:start + 10]
            try:
                await call(self._sqs.change_message_visibility_batch, QueueUrl=self._queue_url,
                           Entries=[{"Id": str(i), "ReceiptHandle": m.receipt_handle,
                                     "VisibilityTimeout": 0} for i, m in enumerate(chunk)])
                self._m_returned.inc(len(chunk))
            except BrokerError as exc:
                log.warning("return_to_queue_failed", records=len(chunk), error=str(exc))
