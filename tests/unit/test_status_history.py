"""A mapping's rates and history from its counters, sampled at given times (no clock)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from broker.observability.metrics import Metrics
from broker.status.history import History


def test_rates_over_the_last_minute_and_ten_second_points() -> None:
    metrics = Metrics(CollectorRegistry())
    history = History(metrics)
    invoked = metrics.invoked_events.labels("f", "m")
    failed = metrics.failed_invoke_events.labels("f", "m")
    assert history.rates("m") == (0.0, 0.0)
    for t in range(0, 125, 5):  # 10 records and 1 error every 5 s for two minutes
        history.sample(1000.0 + t, {"m": 100.0 * t})
        invoked.inc(10)
        failed.inc(1)
    records, errors = history.rates("m")
    assert (records, errors) == (2.0, 0.2), "the last minute: 10 per 5 s, 1 per 5 s"
    points = history.series("m")
    assert [p[0] for p in points] == [1010.0 + 10 * i for i in range(12)]
    assert all(p[1] == 2.0 and p[2] == 0.2 for p in points)
    assert points[-1][3] == 12000.0, "the bucket's worst iterator age"


def test_a_mapping_no_longer_run_is_forgotten() -> None:
    history = History(Metrics(CollectorRegistry()))
    history.sample(0.0, {"m": None})
    history.sample(5.0, {})
    assert history.series("m") == []
