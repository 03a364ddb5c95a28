"""The local demo: resources declared under ``local:``, a demo producer and a demo handler."""

from __future__ import annotations

import itertools
import json
import random
from typing import Any

import structlog

from broker.aws.clients import AwsClients, call
from broker.clock import Clock
from broker.config.models import LocalProducer, LocalResources
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
    source = records[0].get("eventSource", "?") if records else "?"
    print(f"demo handler: {len(records)} record(s) from {source}, {len(failures)} failed")
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


async def produce(clients: AwsClients, producer: LocalProducer, clock: Clock) -> None:
    """Every ``interval_seconds``: an order to the queue (every tenth asks the handler to fail), a
    click to the stream, a cart to the table, each logged (``demo_sent``) so a newcomer sees them."""
    sqs = await clients.client("sqs")
    url = (await call(sqs.get_queue_url, QueueName=producer.QueueName))["QueueUrl"] if producer.QueueName else None
    kinesis = await clients.client("kinesis") if producer.StreamName else None
    dynamodb = await clients.client("dynamodb") if producer.TableName else None
    for n in itertools.count(1):
        try:
            if url:
                order = {"type": "order", "id": n, "amount": round(random.uniform(1, 500), 2), "fail": n % 10 == 0}
                await call(sqs.send_message, QueueUrl=url, MessageBody=json.dumps(order))
            if kinesis is not None:
                click = {"type": "click", "id": n, "page": random.choice(["/", "/cart", "/pay"])}
                await call(kinesis.put_record, StreamName=producer.StreamName, PartitionKey=f"user-{n % 7}",
                           Data=json.dumps(click).encode())
            if dynamodb is not None:
                await call(dynamodb.put_item, TableName=producer.TableName,
                           Item={"id": {"S": f"cart-{n % 5}"}, "items": {"N": str(n)}})
            log.info("demo_sent", n=n, queue=producer.QueueName, stream=producer.StreamName, table=producer.TableName)
        except AwsError as exc:
            log.warning("demo_send_failed", error=str(exc))
        await clock.sleep(producer.interval_seconds)
