"""One trace context, read from and written as X-Ray's header and W3C Trace Context:

    X-Amzn-Trace-Id / AWSTraceHeader   Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1
    traceparent                        00-5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8-01

An X-Ray trace id is a version (1), the epoch second it began (8 hex digits) and 24 random hex
digits; the W3C trace id is the same 32 digits without the dashes, so either form converts to the
other exactly. ``Parent`` / the parent id is the span that called: each invocation attempt is a
new span of the trace (``child``). A header that cannot be read is ignored (a new trace starts),
never an error: tracing must not refuse work.
"""

from __future__ import annotations

import random
import re
import time
from dataclasses import dataclass

_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(?:-.*)?$")
_ROOT = re.compile(r"^1-([0-9a-f]{8})-([0-9a-f]{24})$")


def _span_id() -> str:
    """A random span id (never all zeros), as OpenTelemetry's SDK makes them: not a secret."""
    return f"{random.getrandbits(64) or 1:016x}"


@dataclass(frozen=True, slots=True)
class TraceContext:
    trace_id: str  # 32 lowercase hex digits
    parent_id: str  # 16 lowercase hex digits: the span that called
    sampled: bool

    @classmethod
    def new(cls, *, sampled: bool, now: float | None = None) -> TraceContext:
        """A new trace (X-Ray's form: its first 8 digits are the time it began)."""
        start = int(time.time() if now is None else now)
        return cls(f"{start:08x}{random.getrandbits(96) or 1:024x}", _span_id(), sampled)

    @classmethod
    def from_xray(cls, header: str | None) -> TraceContext | None:
        """``Root=...;Parent=...;Sampled=...`` (any order, other fields ignored); None if unreadable."""
        if not header:
            return None
        fields = {}
        for part in header.split(";"):
            name, sep, value = part.strip().partition("=")
            if sep:
                fields[name.strip()] = value.strip()
        root = _ROOT.match(fields.get("Root", "").lower())
        if root is None:
            return None
        parent = fields.get("Parent", "").lower()
        if not re.fullmatch(r"[0-9a-f]{16}", parent) or parent == "0" * 16:
            parent = _span_id()  # a root without a parent: the caller's segment is unknown
        return cls(root.group(1) + root.group(2), parent, fields.get("Sampled") == "1")

    @classmethod
    def from_traceparent(cls, header: str | None) -> TraceContext | None:
        match = _TRACEPARENT.match((header or "").strip().lower())
        if match is None or match.group(1) == "ff" or set(match.group(2)) == {"0"} or set(match.group(3)) == {"0"}:
            return None
        return cls(match.group(2), match.group(3), bool(int(match.group(4), 16) & 1))

    @classmethod
    def from_headers(cls, traceparent: str | None, xray: str | None) -> TraceContext | None:
        """A request's context: W3C's ``traceparent`` first, else X-Ray's header."""
        return cls.from_traceparent(traceparent) or cls.from_xray(xray)

    def child(self) -> TraceContext:
        """The same trace, called from a new span (an invocation attempt, a delivery)."""
        return TraceContext(self.trace_id, _span_id(), self.sampled)

    @property
    def xray(self) -> str:
        return f"Root=1-{self.trace_id[:8]}-{self.trace_id[8:]};Parent={self.parent_id};Sampled={int(self.sampled)}"

    @property
    def traceparent(self) -> str:
        return f"00-{self.trace_id}-{self.parent_id}-{'01' if self.sampled else '00'}"

    @property
    def xray_trace_id(self) -> str:
        """The trace id as X-Ray writes it (``1-5759e988-bd86...``), for logs."""
        return f"1-{self.trace_id[:8]}-{self.trace_id[8:]}"
