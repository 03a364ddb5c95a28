"""The emulator behind ``embedded`` and these tests hands each SQS message to one receiver at a time,
and loses or revives none under concurrent deletes, as SQS does (moto alone handed ~1 in 1,000 to
two of 6 threads)."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter

import boto3
import pytest
from botocore.exceptions import ClientError

from tests.servers import REGION, Aws


async def test_concurrent_receivers_get_each_message_once(aws: Aws) -> None:
    for round_ in range(8):  # small queues: moto scans a queue's whole list on every call
        url = await aws.create_queue(f"race-{round_}", VisibilityTimeout=60)
        bodies = [f"m{i}" for i in range(200)]
        await aws.send_batch(url, bodies)
        seen = await asyncio.to_thread(_receive_and_delete_concurrently, aws.endpoint, url, 6)
        assert sorted(seen) == sorted(bodies)
        assert [body for body, n in seen.items() if n > 1] == [], "a message was handed to two receivers"
        assert await aws.depth(url) == (0, 0), "a deleted message came back, or a message was lost"


def _receive_and_delete_concurrently(endpoint: str, url: str, threads: int) -> Counter[str]:
    seen: Counter[str] = Counter()
    lock = threading.Lock()

    def receiver() -> None:
        sqs = boto3.client("sqs", endpoint_url=endpoint, region_name=REGION,
                           aws_access_key_id="testing", aws_secret_access_key="testing")
        try:
            while messages := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10,
                                                  WaitTimeSeconds=1).get("Messages", []):
                with lock:
                    seen.update(m["Body"] for m in messages)
                sqs.delete_message_batch(QueueUrl=url, Entries=[  # races the other receivers' scans and deletes
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)])
        finally:
            sqs.close()

    workers = [threading.Thread(target=receiver) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return seen


async def test_receipt_handles_behave_as_sqs_on_a_deep_queue(aws: Aws) -> None:
    """Deletes and visibility changes find messages through an index, not a scan: an earlier receipt
    handle of a re-received message still deletes it, a repeated delete is accepted, an unknown handle
    is SQS's ReceiptHandleIsInvalid, and a deep queue loses and revives nothing."""
    sqs = aws.client("sqs")
    url = await aws.create_queue("deep-handles", VisibilityTimeout=60)
    for start in range(0, 3000, 10):
        await aws.send_batch(url, [f"m{n}" for n in range(start, start + 10)])
    first = (await asyncio.to_thread(sqs.receive_message, QueueUrl=url, MaxNumberOfMessages=1))["Messages"][0]
    await asyncio.to_thread(sqs.change_message_visibility, QueueUrl=url, ReceiptHandle=first["ReceiptHandle"],
                            VisibilityTimeout=0)
    again = (await asyncio.to_thread(sqs.receive_message, QueueUrl=url, MaxNumberOfMessages=1))["Messages"][0]
    assert again["MessageId"] == first["MessageId"]
    await asyncio.to_thread(sqs.delete_message, QueueUrl=url, ReceiptHandle=first["ReceiptHandle"])  # the old handle
    await asyncio.to_thread(sqs.delete_message, QueueUrl=url, ReceiptHandle=again["ReceiptHandle"])  # already gone
    for call, kwargs in ((sqs.delete_message, {}), (sqs.change_message_visibility, {"VisibilityTimeout": 5})):
        with pytest.raises(ClientError) as refused:
            await asyncio.to_thread(call, QueueUrl=url, ReceiptHandle="not-a-handle", **kwargs)
        assert refused.value.response["Error"]["Code"] in ("ReceiptHandleIsInvalid", "InvalidParameterValue")
    seen = await asyncio.to_thread(_receive_and_delete_concurrently, aws.endpoint, url, 6)
    assert first["Body"] not in seen
    assert sorted(seen) == sorted(f"m{n}" for n in range(3000) if f"m{n}" != first["Body"])
    assert max(seen.values()) == 1
    assert await aws.depth(url) == (0, 0)
