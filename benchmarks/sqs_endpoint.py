"""A minimal SQS-compatible endpoint (JSON protocol), O(1) per message, used only as a load source.

The AWS emulator's SQS costs O(queue depth) per call, so it cannot show what the broker costs.
This serves exactly the operations the broker and the baseline call: CreateQueue, GetQueueUrl,
GetQueueAttributes, SendMessageBatch, ReceiveMessage (long polling, visibility timeout),
DeleteMessageBatch, ChangeMessageVisibility[Batch]. Run: python benchmarks/sqs_endpoint.py PORT
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import heapq
import json
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

ACCOUNT = "000000000000"


@dataclass
class Message:
    id: str
    body: str
    md5: str
    sent_ms: int
    receives: int = 0
    first_receive_ms: int = 0


@dataclass
class Queue:
    name: str
    visibility: int = 30
    visible: collections.deque[str] = field(default_factory=collections.deque)
    messages: dict[str, Message] = field(default_factory=dict)
    in_flight: dict[str, tuple[str, float]] = field(default_factory=dict)  # receipt -> (id, expiry)
    expiries: list[tuple[float, str]] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    hold: bool = False  # benchmark: sends are held until BenchRelease makes them visible at once
    held: list[str] = field(default_factory=list)
    released_at: float = 0.0
    last_delete_at: float = 0.0
    deleted: int = 0

    def requeue_expired(self, now: float) -> None:
        while self.expiries and self.expiries[0][0] <= now:
            _, receipt = heapq.heappop(self.expiries)
            entry = self.in_flight.pop(receipt, None)
            if entry and entry[1] <= now and entry[0] in self.messages:
                self.visible.append(entry[0])


class Sqs:
    def __init__(self, host: str) -> None:
        self.host = host
        self.queues: dict[str, Queue] = {}

    def queue(self, body: dict[str, Any]) -> Queue:
        name = body["QueueUrl"].rsplit("/", 1)[-1]
        if name not in self.queues:
            raise KeyError(name)
        return self.queues[name]

    def url(self, name: str) -> str:
        return f"{self.host}/{ACCOUNT}/{name}"

    async def CreateQueue(self, b: dict[str, Any]) -> dict[str, Any]:
        name = b["QueueName"]
        q = self.queues.setdefault(name, Queue(name))
        q.visibility = int(b.get("Attributes", {}).get("VisibilityTimeout", q.visibility))
        q.hold = b.get("Attributes", {}).get("BenchHold") == "true"
        return {"QueueUrl": self.url(name)}

    async def BenchRelease(self, b: dict[str, Any]) -> dict[str, Any]:
        q = self.queue(b)
        q.visible.extend(q.held)
        q.held.clear()
        q.released_at = time.monotonic()
        q.arrived.set()
        return {}

    async def BenchStats(self, b: dict[str, Any]) -> dict[str, Any]:
        q = self.queue(b)
        return {"released_at": q.released_at, "last_delete_at": q.last_delete_at, "deleted": q.deleted,
                "remaining": len(q.messages)}

    async def GetQueueUrl(self, b: dict[str, Any]) -> dict[str, Any]:
        if b["QueueName"] not in self.queues:
            raise KeyError(b["QueueName"])
        return {"QueueUrl": self.url(b["QueueName"])}

    async def GetQueueAttributes(self, b: dict[str, Any]) -> dict[str, Any]:
        q = self.queue(b)
        q.requeue_expired(time.monotonic())
        return {"Attributes": {"VisibilityTimeout": str(q.visibility), "ApproximateNumberOfMessages": str(len(q.visible)),
                               "ApproximateNumberOfMessagesNotVisible": str(len(q.in_flight)),
                               "QueueArn": f"arn:aws:sqs:us-east-1:{ACCOUNT}:{q.name}"}}

    async def SendMessageBatch(self, b: dict[str, Any]) -> dict[str, Any]:
        q = self.queue(b)
        ok = []
        now_ms = int(time.time() * 1000)
        for e in b["Entries"]:
            mid = str(uuid.uuid4())
            md5 = hashlib.md5(e["MessageBody"].encode()).hexdigest()
            q.messages[mid] = Message(mid, e["MessageBody"], md5, now_ms)
            (q.held if q.hold else q.visible).append(mid)
            ok.append({"Id": e["Id"], "MessageId": mid, "MD5OfMessageBody": md5})
        q.arrived.set()
        return {"Successful": ok, "Failed": []}

    async def ReceiveMessage(self, b: dict[str, Any]) -> dict[str, Any]:
        q = self.queue(b)
        want = int(b.get("MaxNumberOfMessages", 1))
        wait = float(b.get("WaitTimeSeconds", 0))
        deadline = time.monotonic() + wait
        while True:
            now = time.monotonic()
            q.requeue_expired(now)
            out = []
            while q.visible and len(out) < want:
                mid = q.visible.popleft()
                m = q.messages.get(mid)
                if m is None:
                    continue
                m.receives += 1
                now_ms = int(time.time() * 1000)
                m.first_receive_ms = m.first_receive_ms or now_ms
                receipt = uuid.uuid4().hex
                expiry = now + int(b.get("VisibilityTimeout", q.visibility))
                q.in_flight[receipt] = (mid, expiry)
                heapq.heappush(q.expiries, (expiry, receipt))
                out.append({"MessageId": mid, "ReceiptHandle": receipt, "MD5OfBody": m.md5, "Body": m.body,
                            "Attributes": {"SentTimestamp": str(m.sent_ms), "ApproximateReceiveCount": str(m.receives),
                                           "ApproximateFirstReceiveTimestamp": str(m.first_receive_ms),
                                           "SenderId": "AIDABENCHMARK"}})
            if out or now >= deadline:
                return {"Messages": out} if out else {}
            q.arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(q.arrived.wait(), deadline - now)

    async def DeleteMessageBatch(self, b: dict[str, Any]) -> dict[str, Any]:
        q = self.queue(b)
        ok = []
        for e in b["Entries"]:
            entry = q.in_flight.pop(e["ReceiptHandle"], None)
            if entry and q.messages.pop(entry[0], None) is not None:
                q.deleted += 1
                q.last_delete_at = time.monotonic()
            ok.append({"Id": e["Id"]})
        return {"Successful": ok, "Failed": []}

    async def ChangeMessageVisibilityBatch(self, b: dict[str, Any]) -> dict[str, Any]:
        q = self.queue(b)
        ok = []
        for e in b["Entries"]:
            entry = q.in_flight.get(e["ReceiptHandle"])
            if entry:
                expiry = time.monotonic() + int(e["VisibilityTimeout"])
                q.in_flight[e["ReceiptHandle"]] = (entry[0], expiry)
                heapq.heappush(q.expiries, (expiry, e["ReceiptHandle"]))
            ok.append({"Id": e["Id"]})
        q.arrived.set()
        return {"Successful": ok, "Failed": []}

    async def ChangeMessageVisibility(self, b: dict[str, Any]) -> dict[str, Any]:
        await self.ChangeMessageVisibilityBatch({"QueueUrl": b["QueueUrl"], "Entries": [
            {"Id": "0", "ReceiptHandle": b["ReceiptHandle"], "VisibilityTimeout": b["VisibilityTimeout"]}]})
        return {}


def make_app(port: int) -> web.Application:
    sqs = Sqs(f"http://127.0.0.1:{port}")

    async def handle(request: web.Request) -> web.Response:
        op = request.headers.get("X-Amz-Target", "").rsplit(".", 1)[-1]
        body = json.loads(await request.read() or b"{}")
        handler = getattr(sqs, op, None)
        if handler is None:
            return _error("UnsupportedOperation", f"{op} is not served by the benchmark endpoint")
        try:
            result = await handler(body)
        except KeyError as exc:
            return _error("QueueDoesNotExist", f"no queue {exc}")
        return web.Response(body=json.dumps(result).encode(), content_type="application/x-amz-json-1.0")

    app = web.Application(client_max_size=8 * 1024 * 1024)
    app.router.add_post("/", handle)
    app.router.add_post("/{tail:.*}", handle)
    return app


def _error(code: str, message: str) -> web.Response:
    body = {"__type": f"com.amazonaws.sqs#{code}", "message": message}
    return web.Response(status=400, body=json.dumps(body).encode(), content_type="application/x-amz-json-1.0",
                        headers={"x-amzn-query-error": f"AWS.SimpleQueueService.{code};Sender"})


if __name__ == "__main__":
    web.run_app(make_app(int(sys.argv[1])), host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
