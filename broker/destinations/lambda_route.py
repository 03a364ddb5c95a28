"""Where a Lambda destination's record goes: a function of this broker (same account) gets it on
its async queue; any other function is invoked asynchronously through the Lambda API."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol

from broker.arns import parse_arn, resolve_name
from broker.aws.clients import AwsClients, call


class _Queue(Protocol):
    def enqueue(self, request_id: str, payload: str) -> Awaitable[str]: ...


class LambdaDestinations:
    def __init__(self, *, aws: AwsClients, account: Callable[[], str], queues: Mapping[str, _Queue],
                 received: Callable[[str], None]) -> None:
        self._aws = aws
        self._account = account
        self._queues = queues  # this broker's functions' async queues, by name
        self._received = received  # an event was queued for that function (counted)

    async def deliver(self, arn: str, event: str) -> None:
        name, _ = resolve_name(arn)
        queue = self._queues.get(name) if parse_arn(arn).account == self._account() else None
        if queue is not None:
            await queue.enqueue(str(uuid.uuid4()), event)
            self._received(name)
            return
        client = await self._aws.client("lambda")
        await call(client.invoke, FunctionName=arn, InvocationType="Event", Payload=event.encode())
