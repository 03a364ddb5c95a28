"""An HTTP target that answers at once (``{}``). It counts records (SQS, Kinesis and raw baseline
shapes) and, at ``/invoke?latency=1`` only (decoding every record costs time the throughput runs
should not pay), the put->receipt latency of Kinesis records whose data carries ``"sent"``. At
``/invoke?poison=KEY:I`` it decodes Kinesis records ``{"i": ...}`` and reports the one of partition
key KEY with that ``i`` as a failed batch item (ReportBatchItemFailures), counting the records of
every other key it took (``good``) and when it took the last (``good_at``).
Run: python benchmarks/target.py PORT"""

from __future__ import annotations

import base64
import json
import sys
import time

from aiohttp import web

stats: dict[str, object] = {"requests": 0, "records": 0, "latencies": [], "good": 0, "good_at": 0.0}


def poisoned(body: bytes, poison: str) -> web.Response:
    key, _, bad = poison.rpartition(":")
    for record in json.loads(body)["Records"]:
        kinesis = record["kinesis"]
        if kinesis["partitionKey"] == key and json.loads(base64.b64decode(kinesis["data"]))["i"] == int(bad):
            return web.json_response({"batchItemFailures": [{"itemIdentifier": kinesis["sequenceNumber"]}]})
        if kinesis["partitionKey"] != key:
            stats["good"] = int(stats["good"]) + 1  # type: ignore[call-overload]
            stats["good_at"] = time.monotonic()
    return web.Response(body=b"{}", content_type="application/json")


async def invoke(request: web.Request) -> web.Response:
    body = await request.read()
    now = time.time()
    stats["requests"] = int(stats["requests"]) + 1  # type: ignore[call-overload]
    stats["records"] = int(stats["records"]) + (  # type: ignore[call-overload]
        body.count(b'"sequenceNumber"') + body.count(b'"SequenceNumber"') + body.count(b'"messageId"'))
    if "poison" in request.query:
        return poisoned(body, request.query["poison"])
    if "latency" in request.query and b'"kinesis"' in body:
        for record in json.loads(body)["Records"]:
            data = json.loads(base64.b64decode(record["kinesis"]["data"]))
            if "sent" in data:
                stats["latencies"].append(now - data["sent"])  # type: ignore[union-attr]
    return web.Response(body=b"{}", content_type="application/json")


async def traces(request: web.Request) -> web.Response:
    """An OTLP/HTTP trace sink (benchmarks/tracing.py): takes the spans, keeps their size."""
    stats["trace_bytes"] = int(stats.get("trace_bytes", 0)) + len(await request.read())  # type: ignore[call-overload]
    return web.Response(body=b"", content_type="application/x-protobuf")


async def get_stats(_: web.Request) -> web.Response:
    return web.json_response(stats)


if __name__ == "__main__":
    app = web.Application(client_max_size=8 * 1024 * 1024)
    app.router.add_post("/invoke", invoke)
    app.router.add_get("/stats", get_stats)
    app.router.add_post("/v1/traces", traces)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
