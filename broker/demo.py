"""The local demo: resources declared under ``local:``, a demo producer and a demo handler."""

from __future__ import annotations

import itertools
import json
import random
from typing import Any

import structlog

from broker.aws import AwsClients, call
from broker.clock import Clock
from broker.config.models import LocalResources
from broker.errors import AwsError

log = structlog.get_logger("broker.demo")


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Demo target: logs what it got; fails the orders whose body says ``"fail": true``."""
    records = event.get("Records", [])
    failures = []
    for record in records:
        body = record.get("body", "")
        if '"fail": true' in body or '"fail":true' in body:
            failures.append({"itemIdentifier": record["messageId"]})
    log.info("demo_handler_invoked", records=len(records), failed=len(failures),
             request_id=context.aws_request_id)
    return {"batchItemFailures": failures}


async def create_resources(clients: AwsClients, local: LocalResources) -> None:
    """Create the declared queues, streams and tables; existing ones are left as they are."""
    sqs = await clients.client("sqs")
    for queue in local.queues:
        attributes = dict(queue.Attributes)
        if queue.QueueName.endswith(".fifo"):
            attributes.setdefault("FifoQueue", "true")
        await call(sqs.create_queue, QueueName=queue.QueueName, Attributes=attributes)
        log.info("queue_ready", queue=queue.QueueName)
    if local.streams:
        kinesis = await clients.client("kinesis")
        for stream in local.streams:
            try:
                await call(kinesis.create_stream, StreamName=stream.StreamName,
                           ShardCount=stream.ShardCount)
            except AwsError as exc:
                if exc.code != "ResourceInUseException":
                    raise
            log.info("stream_ready", stream=stream.StreamName)
    if local.tables:
        dynamodb = await clients.client("dynamodb")
        for table in local.tables:
            try:
                await call(dynamodb.create_table, TableName=table.TableName,
                           KeySchema=[{"AttributeName": table.HashKey, "KeyType": "HASH"}],
                           AttributeDefinitions=[{"AttributeName": table.HashKey,
                                                  "AttributeType": "S"}],
                           BillingMode="PAY_PER_REQUEST",
                           StreamSpecification={"StreamEnabled": True,
                                                "StreamViewType": table.StreamViewType})
            except AwsError as exc:
                if exc.code != "ResourceInUseException":
                    raise
            log.info("table_ready", table=table.TableName)


async def produce(clients: AwsClients, queue_name: str, interval: float, clock: Clock) -> None:
    """Send one demo order every ``interval`` seconds (every tenth asks the handler to fail)."""
    sqs = await clients.client("sqs")
    url = (await call(sqs.get_queue_url, QueueName=queue_name))["QueueUrl"]
    for n in itertools.count(1):
        order = {"type": "order", "id": n, "amount": round(random.uniform(1, 500), 2),
                 "fail": n % 10 == 0}
        await call(sqs.send_message, QueueUrl=url, MessageBody=json.dumps(order))
        log.debug("demo_message_sent", id=n)
        await clock.sleep(interval)
