"""Config loading: AWS's ranges and rules, AWS's wording, every error with its path."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from broker.config import parse_config
from broker.errors import ConfigError

Q = "arn:aws:sqs:us-east-1:000000000000:q"
S = "arn:aws:kinesis:us-east-1:000000000000:stream/s"
D = "arn:aws:dynamodb:us-east-1:000000000000:table/t/stream/2024-01-01T00:00:00.000"


def errors(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(textwrap.dedent(text), env={})
    return [str(i) for i in info.value.issues]


def one_mapping(**fields: object) -> str:
    lines = "\n".join(f"    {k}: {v}" for k, v in fields.items())
    return f"""
functions:
  f: {{Target: {{Url: "http://t"}}}}
event_source_mappings:
  - FunctionName: f
{lines}
"""


def test_sqs_defaults_are_filled() -> None:
    """An SQS mapping gets BatchSize 10, window 0 and a stable UUID."""
    config = parse_config(one_mapping(EventSourceArn=Q), env={})
    esm = config.event_source_mappings[0]
    assert (esm.BatchSize, esm.MaximumBatchingWindowInSeconds) == (10, 0)
    assert esm.UUID == parse_config(one_mapping(EventSourceArn=Q), env={}).event_source_mappings[0].UUID


def test_stream_defaults_are_filled() -> None:
    """Streams default to 100 records, retries and age -1, factor 1, no bisect."""
    esm = parse_config(one_mapping(EventSourceArn=S, StartingPosition="LATEST"), env={}).event_source_mappings[0]
    assert (esm.BatchSize, esm.ParallelizationFactor, esm.MaximumRetryAttempts, esm.MaximumRecordAgeInSeconds,
            esm.BisectBatchOnFunctionError) == (100, 1, -1, -1, False)


def test_batch_size_over_10_needs_a_window() -> None:
    """AWS's message, with the path of the field."""
    assert errors(one_mapping(EventSourceArn=Q, BatchSize=11)) == [
        "event_source_mappings[0].MaximumBatchingWindowInSeconds: Maximum batch window in seconds must be "
        "greater than 0 if maximum batch size is greater than 10"]


def test_ranges_name_their_paths() -> None:
    """Out-of-range values are reported with their path."""
    found = errors(one_mapping(EventSourceArn=Q, BatchSize=10001, MaximumBatchingWindowInSeconds=301))
    assert found[0].startswith("event_source_mappings[0].BatchSize: ")
    assert found[1].startswith("event_source_mappings[0].MaximumBatchingWindowInSeconds: ")


def test_fifo_limits() -> None:
    """FIFO queues: at most 10 per batch and no batching window."""
    found = errors(one_mapping(EventSourceArn=Q + ".fifo", BatchSize=20, MaximumBatchingWindowInSeconds=5))
    assert "event_source_mappings[0].BatchSize: BatchSize must be between 1 and 10 for FIFO queues" in found
    assert "event_source_mappings[0].MaximumBatchingWindowInSeconds: Batching window is not supported for FIFO queues" in found


def test_invalid_filter_pattern() -> None:
    """Bad patterns fail at load with AWS's wording and the pattern's path."""
    found = errors(one_mapping(EventSourceArn=Q, FilterCriteria="{Filters: [{Pattern: 'nope'}]}"))
    assert found[0].startswith("event_source_mappings[0].FilterCriteria.Filters[0].Pattern: Invalid filter pattern definition.")


def test_stream_only_parameters_rejected_for_sqs() -> None:
    """SQS mappings take no stream parameters and no destination."""
    found = errors(one_mapping(EventSourceArn=Q, ParallelizationFactor=2,
                               DestinationConfig="{OnFailure: {Destination: 'arn:aws:sqs:us-east-1:000000000000:d'}}"))
    assert "event_source_mappings[0].ParallelizationFactor: ParallelizationFactor is not supported for SQS event sources" in found
    assert any(f.startswith("event_source_mappings[0].DestinationConfig: Unsupported DestinationConfig parameter") for f in found)


def test_stream_rules() -> None:
    """StartingPosition is required; DynamoDB has no AT_TIMESTAMP; record age 1..59 invalid; no OnSuccess."""
    assert errors(one_mapping(EventSourceArn=S)) == [
        "event_source_mappings[0].StartingPosition: 1 validation error detected: Value null at 'startingPosition' "
        "failed to satisfy constraint: Member must not be null."]
    assert errors(one_mapping(EventSourceArn=D, StartingPosition="AT_TIMESTAMP", StartingPositionTimestamp=1)) == [
        f"event_source_mappings[0].StartingPosition: Unsupported starting position for arn type: {D}"]
    assert errors(one_mapping(EventSourceArn=S, StartingPosition="LATEST", MaximumRecordAgeInSeconds=30)) == [
        "event_source_mappings[0].MaximumRecordAgeInSeconds: MaximumRecordAgeInSeconds must be -1 or between 60 and 604800"]
    found = errors(one_mapping(EventSourceArn=S, StartingPosition="LATEST",
                               DestinationConfig="{OnSuccess: {Destination: 'arn:aws:sqs:us-east-1:000000000000:d'}}"))
    assert found == ["event_source_mappings[0].DestinationConfig.OnSuccess: Unsupported DestinationConfig parameter "
                     "for given event source mapping type."]


def test_unknown_function_and_unknown_field_and_every_error_listed() -> None:
    """All problems are listed at once, each with its path."""
    found = errors(f"""
        functions:
          f: {{Target: {{Url: "http://t"}}, Timeout: 901}}
          g: {{Target: {{}}}}
        event_source_mappings:
          - {{FunctionName: f, EventSourceArn: "{Q}", BatchSze: 5}}
        """)
    assert "functions.f.Timeout: Input should be less than or equal to 900" in found
    assert "functions.g.Target: give exactly one of Url, Handler, Lambda, Runtime" in found
    assert "event_source_mappings[0].BatchSze: unknown field" in found


@pytest.mark.parametrize("arn", [Q, S])
def test_duplicate_mapping_is_a_conflict(arn: str) -> None:
    """The same function and source twice is AWS's ResourceConflict, in its SQS or its stream sentence."""
    found = errors(f"""
        functions:
          f: {{Target: {{Url: "http://t"}}}}
        event_source_mappings:
          - {{FunctionName: f, EventSourceArn: "{arn}", StartingPosition: LATEST, UUID: a}}
          - {{FunctionName: f, EventSourceArn: "{arn}", StartingPosition: LATEST, UUID: b}}
        """ if arn == S else f"""
        functions:
          f: {{Target: {{Url: "http://t"}}}}
        event_source_mappings:
          - {{FunctionName: f, EventSourceArn: "{arn}", UUID: a}}
          - {{FunctionName: f, EventSourceArn: "{arn}", UUID: b}}
        """)
    if arn == Q:
        assert found == [f'event_source_mappings[1]: An event source mapping with SQS arn (" {Q} ") and function '
                         '(" f ") already exists. Please update or delete the existing mapping with UUID a']
    else:
        assert found == [f'event_source_mappings[1]: The event source arn (" {S} ") and function (" f ") provided '
                         'mapping already exists. Please update or delete the existing mapping with UUID a']


def test_mapping_fields_are_refused_in_lambdas_words() -> None:
    """A value outside the API's constraints gets the API's own sentence, after the field's path."""
    assert errors(one_mapping(EventSourceArn=S, StartingPosition="invalid")) == [
        "event_source_mappings[0].StartingPosition: 1 validation error detected: Value 'invalid' at "
        "'startingPosition' failed to satisfy constraint: Member must satisfy enum value set: "
        "[LATEST, AT_TIMESTAMP, TRIM_HORIZON]"]
    assert errors(one_mapping(EventSourceArn=Q, BatchSize=10001)) == [
        "event_source_mappings[0].BatchSize: 1 validation error detected: Value '10001' at 'batchSize' failed to "
        "satisfy constraint: Member must have value less than or equal to 10000"]
    assert errors(one_mapping(BatchSize=1)) == ["event_source_mappings[0].EventSourceArn: Unrecognized event source."]


def test_reserved_concurrency_leaves_100_unreserved() -> None:
    """At most account_concurrency - 100 may be reserved."""
    found = errors("""
        broker: {account_concurrency: 200}
        functions:
          f: {Target: {Url: "http://t"}, ReservedConcurrentExecutions: 101}
        """)
    assert found[0].startswith("functions: Specified ReservedConcurrentExecutions for function decreases")


def test_yaml_errors_have_a_line() -> None:
    """Broken YAML says where."""
    found = errors("functions: [\n")
    assert "not valid YAML at line" in found[0]


def test_env_overrides_broker_settings() -> None:
    """BROKER_* variables override the broker: section."""
    config = parse_config("broker: {redis_url: redis://a:6379/0}", env={
        "BROKER_REDIS_URL": "redis://b:6379/1", "BROKER_API_PORT": "9100", "BROKER_DRAIN_TIMEOUT_SECONDS": "7"})
    assert config.broker.redis_url == "redis://b:6379/1"
    assert config.broker.api.port == 9100
    assert config.broker.drain_timeout_seconds == 7


def test_env_override_is_validated() -> None:
    """A bad override is an error naming the setting."""
    with pytest.raises(ConfigError) as info:
        parse_config("", env={"BROKER_API_PORT": "lots"})
    assert str(info.value.issues[0]).startswith("broker.api.port: ")


def test_a_network_api_needs_credentials_or_an_explicit_opt_out() -> None:
    """Secure by default: 0.0.0.0 without credentials is an error naming the fixes; loopback is fine."""
    assert errors("broker: {api: {host: 0.0.0.0}}") == [
        "broker.api: the API listens on 0.0.0.0, which is not loopback, and no credentials are configured: add "
        "broker.api.credentials (SigV4, what AWS SDKs and the CLI send), or set host: 127.0.0.1, or set auth: none "
        "with allow_unauthenticated_network: true to accept unauthenticated requests"]
    assert errors("broker: {api: {host: 0.0.0.0, auth: none}}")[0].startswith(
        "broker.api.allow_unauthenticated_network: auth is none")
    assert errors("broker: {api: {auth: sigv4}}")[0].startswith("broker.api.credentials: auth is sigv4 but no")
    assert not parse_config("broker: {api: {host: 0.0.0.0, auth: none, allow_unauthenticated_network: true}}",
                            env={}).broker.api.authenticated
    assert not parse_config("broker: {api: {host: '::1'}}", env={}).broker.api.authenticated
    signed = parse_config("broker: {api: {host: 0.0.0.0, credentials: [{AccessKeyId: ops, SecretAccessKey: s3cr3t}]}}",
                          env={})
    assert signed.broker.api.authenticated
    assert signed.broker.api.credentials[0].Actions == ["lambda:*"]


def test_credentials_from_the_environment_and_files(tmp_path: Path) -> None:
    """${VAR} expands from the environment; a missing variable or file is an error naming it."""
    key = tmp_path / "producer"
    key.write_text("from-a-file\n")
    text = (f"broker: {{api: {{credentials: [{{AccessKeyId: ops, SecretAccessKey: '${{OPS_SECRET}}'}}, "
            f"{{AccessKeyId: producer, SecretAccessKeyFile: {key}}}]}}}}")
    creds = parse_config(text, env={"OPS_SECRET": "from-the-env"}).broker.api.credentials
    assert [c.SecretAccessKey for c in creds] == ["from-the-env", "from-a-file"]
    assert errors(text) == ["broker.api.credentials[0].SecretAccessKey: environment variable OPS_SECRET is not set"]
    missing = text.replace(str(key), str(tmp_path / "nope"))
    with pytest.raises(ConfigError) as info:
        parse_config(missing, env={"OPS_SECRET": "x"})
    assert [str(i) for i in info.value.issues] == [
        f"broker.api.credentials[1].SecretAccessKeyFile: cannot read {tmp_path / 'nope'}: No such file or directory"]
    assert errors("broker: {api: {credentials: [{AccessKeyId: ops}]}}") == [
        "broker.api.credentials[0]: give exactly one of SecretAccessKey, SecretAccessKeyFile"]


def test_redis_urls_are_checked() -> None:
    """Cluster and Sentinel forms parse; a malformed one is an error naming the setting, password masked."""
    parse_config("broker: {redis_url: 'redis+cluster://u:pw@h1:7000,h2:7001'}", env={})
    parse_config("broker: {redis_url: 'redis+sentinel://h1:26379,h2:26379/mymaster/2'}", env={})
    assert errors("broker: {redis_url: 'redis+sentinel://:hunter2@h1:26379'}") == [
        "broker.redis_url: 'redis+sentinel://:***@h1:26379' needs the master name: "
        "redis+sentinel://host:port/MASTER_NAME[/DB]"]
    assert errors("broker: {redis_url: 'memcached://h:1'}")[0].startswith("broker.redis_url: unsupported scheme")


def test_destination_arns_need_a_resource_name() -> None:
    """A destination ARN that names no queue or topic is refused."""
    found = errors("""
functions:
  f:
    Target: {Url: "http://t"}
    EventInvokeConfig: {DestinationConfig: {OnFailure: {Destination: "arn:aws:sqs:us-east-1:000000000000:x/"}}}
""")
    assert len(found) == 1
    assert found[0].startswith("functions.f.EventInvokeConfig.DestinationConfig.OnFailure.Destination")


def test_isolation_is_refused_without_a_rule_that_names_the_record() -> None:
    """IsolateFailingKeys needs a rule that names the failing record, and a stream."""
    assert errors(one_mapping(EventSourceArn=S, StartingPosition="LATEST", IsolateFailingKeys="true")) == [
        "event_source_mappings[0].IsolateFailingKeys: IsolateFailingKeys needs FunctionResponseTypes "
        "[ReportBatchItemFailures] or BisectBatchOnFunctionError: true, which name the failing record"]
    assert errors(one_mapping(EventSourceArn=Q, IsolateFailingKeys="true")) == [
        "event_source_mappings[0].IsolateFailingKeys: IsolateFailingKeys is not supported for SQS event sources"]
