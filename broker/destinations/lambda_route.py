"""Where a Lambda destination's record goes: a function of this broker (same account) gets it on
its async queue; any other function is invoked asynchronously through the Lambda API."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from broker.arns import parse_arn, resolve_name
from broker.aws.clients import AwsClients, call

Enqueue = Callable[[str], Awaitable[None]]


class LambdaDestinations:
    def __init__(self, *, aws: AwsClients, account: Callable[[], str],
                 local: Callable[[str], Enqueue | None]) -> None:
        self._aws = aws
        self._account = account
        self._local = local  # this broker's function of that name: its async queue's enqueue

    async def deliver(self, arn: str, event: str) -> None:
        name, _ = resolve_name(arn)
        enqueue = self._local(name) if parse_arn(arn).account == self._account() else None
        if enqueue is not None:
            await enqueue(event)
            return
        client = await self._aws.client("lambda")
        await call(client.invoke, FunctionName=arn, InvocationType="Event", Payload=event.encode())
