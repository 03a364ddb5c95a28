"""Setting a live stream mapping's position (a rewind; Kafka's ``kafka-consumer-groups
--reset-offsets`` is the model), beside Lambda's API and authenticated the same way:

    POST /broker/v1/mappings/{UUID}/position                         broker:SetPosition
        {"StartingPosition": "TRIM_HORIZON" | "LATEST" | "AT_TIMESTAMP", "StartingPositionTimestamp": <s>}
        {"ShardSequenceNumbers": {"shardId-...": "<sequence number>"}}   (resume after that record)

Answers 202 with the position set. Every replica's consumers of the mapping stop after their batch
in flight and resume from the new position (``checkpoints.CheckpointStore.set_start``). On Kinesis,
LATEST is kept as AT_TIMESTAMP of the request, so nothing written between the request and the
consumers' restart is skipped; DynamoDB Streams has no AT_TIMESTAMP, so LATEST there is where each
shard stands when its consumer starts again.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

from broker.api.errors import aws_error, json_object, mapping_not_found, store_guarded
from broker.api.routes import needs
from broker.arns import source_kind
from broker.clock import Clock
from broker.config.models import EventSourceMapping
from broker.control.service import Known
from broker.errors import AwsError
from broker.sources.streams.checkpoints import CheckpointStore
from broker.types import ShardInfo, SourceKind

_POSITIONS = ("TRIM_HORIZON", "LATEST", "AT_TIMESTAMP")
Shards = Callable[[EventSourceMapping], Awaitable[list[ShardInfo]]]


def routes(*, catalog: Callable[[], Awaitable[Mapping[str, Known]]], shards: Shards,
           checkpoints: Callable[[str], CheckpointStore], clock: Clock) -> list[web.RouteDef]:
    api = _Api(catalog=catalog, shards=shards, checkpoints=checkpoints, clock=clock)
    return [web.post("/broker/v1/mappings/{uuid}/position",
                     needs("broker:SetPosition", store_guarded(api.set_position, store="checkpoint")))]


def _invalid(message: str) -> web.Response:
    return aws_error(400, "InvalidParameterValueException", message)


class _Api:
    def __init__(self, *, catalog: Callable[[], Awaitable[Mapping[str, Known]]], shards: Shards,
                 checkpoints: Callable[[str], CheckpointStore], clock: Clock) -> None:
        self._catalog = catalog
        self._shards = shards
        self._checkpoints = checkpoints
        self._clock = clock

    async def set_position(self, request: web.Request) -> web.Response:
        uuid = request.match_info["uuid"]
        known = (await self._catalog()).get(uuid)
        if known is None:
            return mapping_not_found(uuid)
        kind = source_kind(known.esm.EventSourceArn)
        if kind is SourceKind.SQS:
            return _invalid(f"Mapping {uuid} reads an SQS queue, which has no position to set; "
                            "only Kinesis and DynamoDB stream mappings can be rewound")
        body = await json_object(request)
        if isinstance(body, web.Response):
            return body
        if ("StartingPosition" in body) == ("ShardSequenceNumbers" in body):
            return _invalid('Give either "StartingPosition" (TRIM_HORIZON, LATEST or AT_TIMESTAMP) or '
                            '"ShardSequenceNumbers" ({"<shard id>": "<sequence number>"})')
        if "StartingPosition" in body:
            return await self._set_start(uuid, kind, body)
        return await self._set_sequences(uuid, known.esm, body)

    async def _set_start(self, uuid: str, kind: SourceKind, body: dict[str, Any]) -> web.Response:
        position, timestamp = body["StartingPosition"], body.get("StartingPositionTimestamp")
        if position not in _POSITIONS:
            return _invalid(f"1 validation error detected: Value '{position}' at 'startingPosition' failed to "
                            f"satisfy constraint: Member must satisfy enum value set: [{', '.join(_POSITIONS)}]")
        if position == "AT_TIMESTAMP":
            if kind is SourceKind.DYNAMODB:
                return _invalid("Unsupported starting position for DynamoDB Streams: AT_TIMESTAMP "
                                "(use TRIM_HORIZON, LATEST or ShardSequenceNumbers)")
            if isinstance(timestamp, bool) or not isinstance(timestamp, int | float) or not math.isfinite(timestamp) \
                    or timestamp < 0:
                return _invalid("StartingPositionTimestamp must be given with AT_TIMESTAMP, in seconds since "
                                "the epoch")
        elif timestamp is not None:
            return _invalid("StartingPositionTimestamp is only valid with StartingPosition AT_TIMESTAMP")
        if position == "LATEST" and kind is SourceKind.KINESIS:
            position, timestamp = "AT_TIMESTAMP", self._clock.time()  # now, not when each consumer restarts
        generation = await self._checkpoints(uuid).set_start(position, None if timestamp is None else float(timestamp))
        answer: dict[str, Any] = {"UUID": uuid, "StartingPosition": position, "Generation": generation}
        if timestamp is not None:
            answer["StartingPositionTimestamp"] = float(timestamp)
        return web.json_response(answer, status=202)

    async def _set_sequences(self, uuid: str, esm: EventSourceMapping, body: dict[str, Any]) -> web.Response:
        sequences = body["ShardSequenceNumbers"]
        if not isinstance(sequences, dict) or not sequences or not all(
                isinstance(k, str) and isinstance(v, str) and v.isdigit() for k, v in sequences.items()):
            return _invalid('ShardSequenceNumbers must map shard ids to sequence numbers (strings of digits), '
                            'e.g. {"shardId-000000000000": "49590338271490256608559692538361571095921575989136588898"}')
        try:
            listed = await self._shards(esm)
        except AwsError as exc:
            if exc.retryable:
                return aws_error(503, "ServiceException", f"the stream's shards could not be listed: {exc}")
            return _invalid(f"the stream's shards could not be listed: {exc}")
        unknown = sorted(set(sequences) - {s.shard_id for s in listed})
        if unknown:
            return aws_error(404, "ResourceNotFoundException",
                             f"Shards not found in {esm.EventSourceArn}: {', '.join(unknown[:10])}")
        again = _descendants(set(sequences), listed)
        generation = await self._checkpoints(uuid).set_sequences(dict(sequences), sorted(again))
        return web.json_response({"UUID": uuid, "ShardSequenceNumbers": sequences, "ReadAgain": sorted(again),
                                  "Generation": generation}, status=202)


def _descendants(shards: set[str], listed: list[ShardInfo]) -> set[str]:
    """The shards made from these by resharding, and theirs: read again from their start, so each
    key's records still come in order after the records of the shards set."""
    out: set[str] = set()
    frontier = set(shards)
    while frontier:
        children = {s.shard_id for s in listed if frontier & set(s.parents)} - out - shards
        out |= children
        frontier = children
    return out
