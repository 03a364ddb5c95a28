"""The embedded emulator under a deep queue, as a user trying the broker locally meets it: 1,000
messages, 10% failing, a visibility timeout of 6 x Timeout. Every good message is handled once
and deleted, every failing one reaches the DLQ, and no good one does."""

from __future__ import annotations

import asyncio
import collections
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import boto3
import yaml

from broker.embedded import free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[2]
QUEUE = "arn:aws:sqs:us-east-1:000000000000:deep"
DLQ = "arn:aws:sqs:us-east-1:000000000000:deep-dlq"


async def test_a_deep_queue_on_the_embedded_emulator(tmp_path: Path) -> None:
    aws_port, api_port = free_port(), free_port()
    records = tmp_path / "records.jsonl"
    records.touch()
    config = {
        "broker": {"aws_endpoint_url": "embedded", "redis_url": "embedded", "data_dir": str(tmp_path / "data"),
                   "embedded_aws_port": aws_port, "api": {"host": "127.0.0.1", "port": api_port},
                   "log_format": "json", "sqs_wait_time_seconds": 2, "drain_timeout_seconds": 5},
        "functions": {"f": {"Target": {"Handler": "tests.handlers.batch:handler"}, "Timeout": 2,
                            "Environment": {"Variables": {"RECORD_FILE": str(records), "PYTHONPATH": str(ROOT),
                                                            "RECORD_SLEEP_SECONDS": "0"}}}},
        "event_source_mappings": [{"FunctionName": "f", "EventSourceArn": QUEUE, "BatchSize": 10,
                                   "FunctionResponseTypes": ["ReportBatchItemFailures"]}],
        "local": {"queues": [
            {"QueueName": "deep-dlq"},
            {"QueueName": "deep", "Attributes": {
                "VisibilityTimeout": "12",
                "RedrivePolicy": json.dumps({"deadLetterTargetArn": DLQ, "maxReceiveCount": "2"})}}]},
    }
    path = tmp_path / "deep.yaml"
    path.write_text(yaml.safe_dump(config))
    log = tmp_path / "broker.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "broker", "run", "-c", str(path)], stdout=out,
                                stderr=subprocess.STDOUT, cwd=ROOT, env=dict(os.environ))
    sqs = boto3.client("sqs", endpoint_url=f"http://127.0.0.1:{aws_port}", region_name="us-east-1",
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    try:
        await asyncio.to_thread(wait_for_port, aws_port, None, "emulator", 60)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                url = sqs.get_queue_url(QueueName="deep")["QueueUrl"]
                break
            except sqs.exceptions.QueueDoesNotExist:
                await asyncio.sleep(0.2)
        dlq_url = sqs.get_queue_url(QueueName="deep-dlq")["QueueUrl"]
        bodies = [f"bad-{n}" if n % 10 == 7 else f"good-{n}" for n in range(1000)]
        started = time.monotonic()
        for start in range(0, len(bodies), 10):
            await asyncio.to_thread(sqs.send_message_batch, QueueUrl=url, Entries=[
                {"Id": str(i), "MessageBody": b} for i, b in enumerate(bodies[start:start + 10])])

        def handled() -> collections.Counter[str]:
            return collections.Counter(json.loads(line)["body"] for line in records.read_text().splitlines())

        in_dlq: list[str] = []
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline and (len(handled()) < 900 or len(in_dlq) < 100):
            got = await asyncio.to_thread(sqs.receive_message, QueueUrl=dlq_url, MaxNumberOfMessages=10,
                                          WaitTimeSeconds=1)
            for message in got.get("Messages", []):
                in_dlq.append(message["Body"])
                sqs.delete_message(QueueUrl=dlq_url, ReceiptHandle=message["ReceiptHandle"])
        elapsed = time.monotonic() - started
        await asyncio.sleep(1)
        counts = handled()
        attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    good = [b for b in bodies if b.startswith("good")]
    twice = sorted(b for b, n in counts.items() if n > 1)
    print(f"embedded deep queue: {len(counts)} handled, {len(twice)} twice, {len(in_dlq)} in the DLQ, {elapsed:.1f} s")
    assert sorted(counts) == sorted(good), "every good message handled"
    assert not twice, f"{len(twice)} good messages handled twice: {twice[:5]}"
    assert sorted(in_dlq) == sorted(b for b in bodies if b.startswith("bad")), "the failing ones, and only they"
    assert attributes["ApproximateNumberOfMessages"] == "0"
    assert attributes["ApproximateNumberOfMessagesNotVisible"] == "0"
