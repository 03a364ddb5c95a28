"""Each mapping's recent activity, from its own counters, sampled by the reporter: records and
errors per second over the last minute, and 15 minutes of history in 10-second buckets (records/s,
errors/s, the worst iterator age) for the console's charts. In memory, per replica."""

from __future__ import annotations

import collections
from dataclasses import dataclass

from broker.observability.metrics import Metrics

BUCKET_SECONDS = 10.0
KEPT_SECONDS = 15 * 60.0
RATE_SECONDS = 60.0


@dataclass
class _Sample:
    at: float
    records: float
    errors: float
    age_ms: float | None


def _totals(counter: object) -> dict[str, float]:
    """A counter's ``_total`` per mapping (label ``mapping``), read through the collector's public API."""
    out: dict[str, float] = {}
    for family in counter.collect():  # type: ignore[attr-defined]
        for sample in family.samples:
            if sample.name.endswith("_total"):
                uuid = sample.labels.get("mapping", "")
                out[uuid] = out.get(uuid, 0.0) + sample.value
    return out


class History:
    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._samples: dict[str, collections.deque[_Sample]] = {}

    def sample(self, now: float, ages_ms: dict[str, float | None]) -> None:
        """Read the counters now; ``ages_ms`` is each running mapping's worst iterator age."""
        invoked = _totals(self._metrics.invoked_events)
        failed = _totals(self._metrics.failed_invoke_events)
        for uuid in set(ages_ms) | set(invoked):
            kept = self._samples.setdefault(uuid, collections.deque())
            kept.append(_Sample(now, invoked.get(uuid, 0.0), failed.get(uuid, 0.0), ages_ms.get(uuid)))
            while kept and kept[0].at < now - KEPT_SECONDS - BUCKET_SECONDS:
                kept.popleft()
        for uuid in [u for u in self._samples if u not in ages_ms and u not in invoked]:
            del self._samples[uuid]

    def rates(self, uuid: str) -> tuple[float, float]:
        """Records and errors per second over the last minute (or what is sampled of it)."""
        kept = self._samples.get(uuid)
        if not kept or len(kept) < 2:
            return 0.0, 0.0
        last = kept[-1]
        first = next((s for s in kept if s.at >= last.at - RATE_SECONDS), kept[0])
        if first is last:
            first = kept[-2]
        span = last.at - first.at
        if span <= 0:
            return 0.0, 0.0
        return round((last.records - first.records) / span, 2), round((last.errors - first.errors) / span, 2)

    def series(self, uuid: str) -> list[list[float | None]]:
        """[bucket start, records/s, errors/s, worst iterator age ms] per 10-second bucket, oldest
        first: the rates from the bucket's last sample and the one before the bucket."""
        last_of: dict[float, _Sample] = {}
        worst: dict[float, float | None] = {}
        for s in self._samples.get(uuid, ()):
            bucket = s.at - s.at % BUCKET_SECONDS
            last_of[bucket] = s
            if s.age_ms is not None:
                worst[bucket] = max(worst.get(bucket) or 0.0, s.age_ms)
        out: list[list[float | None]] = []
        previous: _Sample | None = None
        for bucket in sorted(last_of):
            cur = last_of[bucket]
            if previous is not None and cur.at > previous.at:
                span = cur.at - previous.at
                out.append([bucket, round((cur.records - previous.records) / span, 2),
                            round((cur.errors - previous.errors) / span, 2), worst.get(bucket)])
            previous = cur
        return out
