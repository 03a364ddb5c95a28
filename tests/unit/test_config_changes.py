"""What a reload changes, decided from the old and new config alone."""

from __future__ import annotations

import textwrap

from broker.config import parse_config
from broker.config.changes import changes

Q = "arn:aws:sqs:us-east-1:000000000000:q"


def config(extra_broker: str = "", timeout: int = 3, enabled: bool = True, batch: int = 10, keys: str = "") -> object:
    return parse_config(textwrap.dedent(f"""
        broker:
          drain_timeout_seconds: 25
          api: {{host: 127.0.0.1{keys}}}
          {extra_broker}
        functions:
          f: {{Target: {{Url: "http://t"}}, Timeout: {timeout}}}
          g: {{Target: {{Url: "http://t"}}}}
        event_source_mappings:
          - {{UUID: a, FunctionName: f, EventSourceArn: "{Q}", Enabled: {str(enabled).lower()}, BatchSize: {batch}}}
          - {{UUID: b, FunctionName: g, EventSourceArn: "{Q}", BatchSize: 5}}
        """), env={})


def test_nothing_changed() -> None:
    found = changes(config(), config())  # type: ignore[arg-type]
    assert (found.restart_required, found.functions, found.stopped_mappings) == ([], set(), [])


def test_enabled_alone_restarts_nothing_and_a_batch_size_restarts_its_mapping() -> None:
    assert changes(config(), config(enabled=False)).stopped_mappings == []  # type: ignore[arg-type]
    assert changes(config(), config(batch=7)).stopped_mappings == ["a"]  # type: ignore[arg-type]


def test_a_changed_function_restarts_its_mappings_only() -> None:
    found = changes(config(), config(timeout=7))  # type: ignore[arg-type]
    assert found.functions == {"f"}
    assert found.stopped_mappings == ["a"]


def test_broker_settings_need_a_restart_but_keys_rotate_live() -> None:
    old, new = config(), config(extra_broker="sqs_wait_time_seconds: 5")
    found = changes(old, new)  # type: ignore[arg-type]
    assert found.restart_required == ["sqs_wait_time_seconds"]
    assert new.broker.sqs_wait_time_seconds == 20, "the running settings stay until a restart"  # type: ignore[attr-defined]
    one = ", credentials: [{AccessKeyId: ops, SecretAccessKey: s1}]"
    two = ", credentials: [{AccessKeyId: ops, SecretAccessKey: s1}, {AccessKeyId: new, SecretAccessKey: s2}]"
    old, new = config(keys=one), config(keys=two)
    assert changes(old, new).restart_required == []  # type: ignore[arg-type]
    assert [c.AccessKeyId for c in new.broker.api.credentials] == ["ops", "new"]  # type: ignore[attr-defined]
    assert changes(config(), config(keys=one)).restart_required == ["api"]  # type: ignore[arg-type]
