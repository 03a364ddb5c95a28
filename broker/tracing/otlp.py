"""OTLP/HTTP trace export, hand-written (docs/design.md, "Decisions"): OpenTelemetry's exporter
took 78 µs of CPU to encode one span here, more than the rest of an async event's handling. This
writes the same message (``ExportTraceServiceRequest``, opentelemetry-proto's trace.proto) straight
to protobuf's wire format, only the fields the broker's spans use, and POSTs it from the export
thread (``spans``).

Wire format: each field is a key (``field number << 3 | wire type``) then a varint (type 0), 8
little-endian bytes (type 1), or a length and bytes (type 2: strings, bytes, nested messages).
"""

from __future__ import annotations

import os
import struct
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any

from broker.tracing.context import TraceContext

_U64 = (1 << 64) - 1
_SMALL = [bytes((i,)) for i in range(128)]
_KV_CACHE: dict[tuple[str, Any], bytes] = {}  # attributes repeat (names, outcomes, systems): encoded once
_UNIQUE = frozenset({"faas.invocation_id", "messaging.message.id"})  # never repeat: not worth a cache slot


class Recorded:
    """A sampled span, as it is exported (``otlp.encode``)."""

    __slots__ = ("attributes", "end", "events", "kind", "links", "name", "parent_id", "span_id", "start",
                 "status", "trace_id")

    def __init__(self, name: str, *, kind: int, trace_id: str, span_id: str, parent_id: str | None,
                 links: Sequence[TraceContext], attributes: dict[str, Any]) -> None:
        self.name, self.kind, self.trace_id, self.span_id, self.parent_id = name, kind, trace_id, span_id, parent_id
        self.links = links
        self.attributes = attributes
        self.events: list[tuple[str, int, dict[str, Any]]] = []
        self.status: tuple[int, str] | None = None  # (2: error, description)
        self.start = time.time_ns()
        self.end = 0



def _varint(value: int) -> bytes:
    if value < 0x80:
        return _SMALL[value]
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (strings, bytes, messages)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _fixed64(number: int, value: int) -> bytes:
    return _varint(number << 3 | 1) + struct.pack("<Q", value & _U64)


def _any(value: Any) -> bytes:
    """An ``AnyValue``: string 1, bool 2, int 3, double 4."""
    if isinstance(value, bool):
        return b"\x10" + (b"\x01" if value else b"\x00")
    if isinstance(value, int):
        return b"\x18" + _varint(value & _U64)
    if isinstance(value, float):
        return b"\x21" + struct.pack("<d", value)
    return _field(1, str(value).encode())


def _attributes(number: int, attributes: Mapping[str, Any] | None) -> bytes:
    """``repeated KeyValue`` (key 1, value 2) as field ``number``."""
    if not attributes:
        return b""
    parts = []
    for item in attributes.items():
        encoded = _KV_CACHE.get(item)
        if encoded is None:
            encoded = _field(1, item[0].encode()) + _field(2, _any(item[1]))
            if len(_KV_CACHE) < 4096 and item[0] not in _UNIQUE:
                _KV_CACHE[item] = encoded
        parts.append(encoded)
    key = _varint(number << 3 | 2)
    return b"".join(key + _varint(len(p)) + p for p in parts)


def _span(span: Recorded) -> bytes:
    """One ``Span``."""
    out = [_field(1, bytes.fromhex(span.trace_id)), _field(2, bytes.fromhex(span.span_id))]
    if span.parent_id is not None:
        out.append(_field(4, bytes.fromhex(span.parent_id)))
    out += [_field(5, span.name.encode()), b"\x30" + _SMALL[span.kind],
            _fixed64(7, span.start), _fixed64(8, span.end), _attributes(9, span.attributes)]
    for name, at, attributes in span.events:
        out.append(_field(11, _fixed64(1, at) + _field(2, name.encode()) + _attributes(3, attributes)))
    for link in span.links:
        out.append(_field(13, _field(1, bytes.fromhex(link.trace_id)) + _field(2, bytes.fromhex(link.parent_id))))
    if span.status is not None:
        code, description = span.status
        out.append(_field(15, (_field(2, description.encode()) if description else b"") + b"\x18" + _SMALL[code]))
    return b"".join(out)


def encode(spans: Sequence[Recorded], resource: Mapping[str, Any], scope: tuple[str, str]) -> bytes:
    """An ``ExportTraceServiceRequest``: one resource, one instrumentation scope (name, version)."""
    scope_message = _field(1, scope[0].encode()) + (_field(2, scope[1].encode()) if scope[1] else b"")
    scope_spans = _field(1, scope_message) + b"".join(_field(2, _span(s)) for s in spans)
    return _field(1, _field(1, _attributes(1, resource)) + _field(2, scope_spans))


def resource_from_environment() -> dict[str, str]:
    """``OTEL_RESOURCE_ATTRIBUTES``: ``key=value,key2=value2``."""
    return _pairs(os.environ.get("OTEL_RESOURCE_ATTRIBUTES", ""))


def _pairs(raw: str) -> dict[str, str]:
    out = {}
    for part in raw.split(","):
        key, sep, value = part.partition("=")
        if sep and key.strip():
            out[key.strip()] = urllib.parse.unquote(value.strip())
    return out


def traces_url(endpoint: str | None) -> str:
    """The OTLP/HTTP traces URL: the config's endpoint, else the standard variables, else localhost."""
    if endpoint:
        return f"{endpoint.rstrip('/')}/v1/traces"
    if os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        return os.environ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]
    base = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "http://localhost:4318")
    return f"{base.rstrip('/')}/v1/traces"


def headers_from_environment() -> dict[str, str]:
    """``OTEL_EXPORTER_OTLP_HEADERS`` / ``..._TRACES_HEADERS``: ``key=value,key2=value2``."""
    raw = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_HEADERS") or os.environ.get("OTEL_EXPORTER_OTLP_HEADERS", "")
    return _pairs(raw)


def post(url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> bool:
    """One export; True if the collector took it."""
    request = urllib.request.Request(url, data=body, method="POST",  # noqa: S310 - the operator's collector
                                     headers={"Content-Type": "application/x-protobuf", **headers})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return bool(200 <= response.status < 300)
    except (urllib.error.URLError, OSError, ValueError):
        return False
