"""Cross-field rules of the config, with AWS's wording where AWS has one (docs/aws-semantics.md,
"Mapping parameters", "Recorded refusals").

``check`` returns every issue with its path; ``apply_defaults`` fills each mapping's ``None``
fields with AWS's default for its source, so the API echoes what AWS would.
"""

from __future__ import annotations

import time
import uuid
from urllib.parse import urlsplit

from broker.arns import is_fifo, parse_arn, source_kind
from broker.batching.filtering import FilterPatternError, compile_pattern
from broker.config import wording
from broker.config.models import Config, EventSourceMapping
from broker.errors import ConfigError, ConfigIssue
from broker.redaction import redact_url
from broker.redis import client as redis_client
from broker.types import SourceKind

_STREAM_ONLY = (
    "StartingPosition",
    "StartingPositionTimestamp",
    "ParallelizationFactor",
    "MaximumRetryAttempts",
    "MaximumRecordAgeInSeconds",
    "BisectBatchOnFunctionError",
    "TumblingWindowInSeconds",
    "IsolateFailingKeys",
)
_NO_STARTING_POSITION = wording.NO_STARTING_POSITION
_UNSUPPORTED_DESTINATION = wording.UNSUPPORTED_DESTINATION
_UUID_NAMESPACE = uuid.UUID("8c1d5e6a-3b1f-4c52-9a57-2f0e6b1d7c40")
MIN_UNRESERVED_CONCURRENCY = 100


def mapping_uuid(esm: EventSourceMapping) -> str:
    """The mapping's UUID: given, or derived from (function, source) so it is stable across restarts."""
    return esm.UUID or str(uuid.uuid5(_UUID_NAMESPACE, f"{esm.FunctionName}|{esm.EventSourceArn}"))


def check(config: Config, *, now: float | None = None, positions: list[int] | None = None,
          known_functions: set[str] | None = None) -> list[ConfigIssue]:
    """Every cross-field issue. ``positions`` gives each mapping's index in the file and
    ``known_functions`` every declared name, for when only the valid parts of a file are checked."""
    issues: list[ConfigIssue] = []
    issues += _check_settings(config)
    issues += _check_functions(config)
    seen_pairs: dict[tuple[str, str], str] = {}
    seen_uuids: set[str] = set()
    known = known_functions if known_functions is not None else set(config.functions)
    for n, esm in enumerate(config.event_source_mappings):
        path = f"event_source_mappings[{positions[n] if positions else n}]"
        issues += _check_mapping(known, esm, path, now if now is not None else time.time())
        uid = mapping_uuid(esm)
        if uid in seen_uuids:
            issues.append(ConfigIssue(f"{path}.UUID", f"duplicate mapping UUID {uid}"))
        seen_uuids.add(uid)
        pair = (esm.FunctionName, esm.EventSourceArn)
        if pair in seen_pairs:
            kind = source_kind_or_none(esm.EventSourceArn) or SourceKind.KINESIS
            issues.append(ConfigIssue(path, wording.duplicate_mapping(kind, esm.EventSourceArn, esm.FunctionName,
                                                                      seen_pairs[pair])))
        seen_pairs.setdefault(pair, uid)
    return issues


def _check_settings(config: Config) -> list[ConfigIssue]:
    issues = _check_api(config) + _check_urls(config)
    s = config.broker
    has_sqs = any(source_kind_or_none(m.EventSourceArn) is SourceKind.SQS for m in config.event_source_mappings)
    if has_sqs and s.drain_timeout_seconds < s.sqs_wait_time_seconds:
        issues.append(ConfigIssue("broker.drain_timeout_seconds", (
            f"{s.drain_timeout_seconds:g} s is shorter than sqs_wait_time_seconds ({s.sqs_wait_time_seconds} s): a "
            "drain must outlast one long poll, or messages received during it stay invisible until their "
            "visibility timeout; raise drain_timeout_seconds or lower sqs_wait_time_seconds")))
    url = config.broker.redis_url
    if url != "embedded":
        try:
            redis_client.parse(url)
        except ConfigError as exc:
            issues += exc.issues
    return issues


def _check_urls(config: Config) -> list[ConfigIssue]:
    """Targets and endpoints are http(s) URLs."""
    urls = [("broker.aws_endpoint_url", config.broker.aws_endpoint_url)]
    for name, fn in config.functions.items():
        urls += [(f"functions.{name}.Target.Url", fn.Target.Url),
                 (f"functions.{name}.Target.EndpointUrl", fn.Target.EndpointUrl)]
    issues = []
    for path, url in urls:
        if not url or url == "embedded":
            continue
        parsed = urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            issues.append(ConfigIssue(path, f"{redact_url(url)!r} is not an http:// or https:// URL with a host"))
    return issues


def source_kind_or_none(arn: str) -> SourceKind | None:
    try:
        return source_kind(arn)
    except ValueError:
        return None


def _check_api(config: Config) -> list[ConfigIssue]:
    """Secure by default: a network-facing API needs SigV4 credentials or an explicit opt-out."""
    api = config.broker.api
    if api.auth == "sigv4" and not api.credentials:
        return [ConfigIssue("broker.api.credentials", "auth is sigv4 but no credentials are configured: "
                            "add at least one AccessKeyId with SecretAccessKey or SecretAccessKeyFile")]
    if api.auth is None and not api.credentials and not api.loopback:
        return [ConfigIssue("broker.api", (
            f"the API listens on {api.host}, which is not loopback, and no credentials are configured: add "
            "broker.api.credentials (SigV4, what AWS SDKs and the CLI send), or set host: 127.0.0.1, or set "
            "auth: none with allow_unauthenticated_network: true to accept unauthenticated requests"))]
    if api.auth == "none" and not api.loopback and not api.allow_unauthenticated_network:
        return [ConfigIssue("broker.api.allow_unauthenticated_network", (
            f"auth is none and the API listens on {api.host}, which is not loopback: set "
            "allow_unauthenticated_network: true to accept that anyone who reaches the port may use the API"))]
    seen: set[str] = set()
    issues = []
    for i, cred in enumerate(api.credentials):
        if cred.AccessKeyId in seen:
            issues.append(ConfigIssue(f"broker.api.credentials[{i}].AccessKeyId",
                                      f"duplicate AccessKeyId {cred.AccessKeyId}"))
        seen.add(cred.AccessKeyId)
    return issues


def _check_functions(config: Config) -> list[ConfigIssue]:
    issues = []
    reserved = 0
    for name, fn in config.functions.items():
        reserved += fn.ReservedConcurrentExecutions or 0
        dlq = fn.DeadLetterConfig.TargetArn if fn.DeadLetterConfig else ""
        if dlq and not _is_service(dlq, ("sqs", "sns")):
            issues.append(ConfigIssue(f"functions.{name}.DeadLetterConfig.TargetArn",
                                      "must be the ARN of an SQS queue or an SNS topic"))
        dest = fn.EventInvokeConfig.DestinationConfig
        for kind, ref in (("OnSuccess", dest and dest.OnSuccess), ("OnFailure", dest and dest.OnFailure)):
            allowed = ("sqs", "sns", "lambda", "events") + (("s3",) if kind == "OnFailure" else ())
            if ref and ref.Destination and not _is_service(ref.Destination, allowed):
                issues.append(ConfigIssue(
                    f"functions.{name}.EventInvokeConfig.DestinationConfig.{kind}.Destination",
                    f"must be the ARN of one of: {', '.join(allowed)}"))
    limit = config.broker.account_concurrency - MIN_UNRESERVED_CONCURRENCY
    if reserved > limit:
        issues.append(ConfigIssue("functions", (
            f"Specified ReservedConcurrentExecutions for function decreases account's "
            f"UnreservedConcurrentExecution below its minimum value of "
            f"[{MIN_UNRESERVED_CONCURRENCY}]. (reserved in total: {reserved}, "
            f"broker.account_concurrency: {config.broker.account_concurrency})")))
    return issues


def _is_service(arn: str, services: tuple[str, ...]) -> bool:
    try:
        parsed = parse_arn(arn)
    except ValueError:
        return False
    return parsed.service in services and not is_fifo(arn) and bool(parsed.name)


def _check_mapping(functions: set[str], esm: EventSourceMapping, path: str, now: float) -> list[ConfigIssue]:
    issues: list[ConfigIssue] = []
    if esm.FunctionName not in functions:
        issues.append(ConfigIssue(f"{path}.FunctionName", (
            f"{wording.FUNCTION_MISSING} ({esm.FunctionName} is not declared under functions:)")))
    try:
        kind = source_kind(esm.EventSourceArn)
    except ValueError as exc:
        issues.append(ConfigIssue(f"{path}.EventSourceArn", str(exc)))
        return issues
    for j, flt in enumerate(esm.FilterCriteria.Filters if esm.FilterCriteria else []):
        try:
            compile_pattern(flt.Pattern)
        except FilterPatternError as exc:
            issues.append(ConfigIssue(f"{path}.FilterCriteria.Filters[{j}].Pattern", str(exc)))
    if kind is SourceKind.SQS:
        issues += _check_sqs(esm, path)
    else:
        issues += _check_stream(esm, path, kind, now)
    return issues


def _check_sqs(esm: EventSourceMapping, path: str) -> list[ConfigIssue]:
    issues = [ConfigIssue(f"{path}.{name}", f"{name} is not supported for SQS event sources")
              for name in _STREAM_ONLY if getattr(esm, name) is not None]
    if esm.DestinationConfig and (esm.DestinationConfig.OnFailure or esm.DestinationConfig.OnSuccess):
        issues.append(ConfigIssue(f"{path}.DestinationConfig", (
            f"{_UNSUPPORTED_DESTINATION} SQS mappings use the queue's redrive policy (DLQ)")))
    batch = esm.BatchSize or 10
    window = esm.MaximumBatchingWindowInSeconds or 0
    if is_fifo(esm.EventSourceArn):
        if batch > 10:
            issues.append(ConfigIssue(f"{path}.BatchSize",
                                      "BatchSize must be between 1 and 10 for FIFO queues"))
        if window:
            issues.append(ConfigIssue(f"{path}.MaximumBatchingWindowInSeconds",
                                      "Batching window is not supported for FIFO queues"))
    elif batch > 10 and window < 1:
        issues.append(ConfigIssue(f"{path}.MaximumBatchingWindowInSeconds", (
            "Maximum batch window in seconds must be greater than 0 if maximum batch size "
            "is greater than 10")))
    return issues


def _check_stream(esm: EventSourceMapping, path: str, kind: SourceKind, now: float) -> list[ConfigIssue]:
    issues: list[ConfigIssue] = []
    if esm.ScalingConfig and esm.ScalingConfig.MaximumConcurrency is not None:
        issues.append(ConfigIssue(f"{path}.ScalingConfig",
                                  "ScalingConfig is only supported for SQS event sources"))
    if esm.StartingPosition is None:
        issues.append(ConfigIssue(f"{path}.StartingPosition",
                                  _NO_STARTING_POSITION))
    elif esm.StartingPosition == "AT_TIMESTAMP" and kind is SourceKind.DYNAMODB:
        issues.append(ConfigIssue(f"{path}.StartingPosition",
                                  f"Unsupported starting position for arn type: {esm.EventSourceArn}"))
    if esm.StartingPositionTimestamp is not None:
        if esm.StartingPosition != "AT_TIMESTAMP":
            issues.append(ConfigIssue(f"{path}.StartingPositionTimestamp",
                                      "StartingPositionTimestamp requires StartingPosition AT_TIMESTAMP"))
        elif esm.StartingPositionTimestamp > now:
            issues.append(ConfigIssue(f"{path}.StartingPositionTimestamp",
                                      "StartingPositionTimestamp must not be in the future"))
    elif esm.StartingPosition == "AT_TIMESTAMP":
        issues.append(ConfigIssue(f"{path}.StartingPositionTimestamp",
                                  "StartingPositionTimestamp is required with AT_TIMESTAMP"))
    age = esm.MaximumRecordAgeInSeconds
    if age is not None and age != -1 and age < 60:
        issues.append(ConfigIssue(f"{path}.MaximumRecordAgeInSeconds",
                                  "MaximumRecordAgeInSeconds must be -1 or between 60 and 604800"))
    issues += _check_isolation(esm, path)
    dest = esm.DestinationConfig
    if dest and dest.OnSuccess and dest.OnSuccess.Destination:
        issues.append(ConfigIssue(f"{path}.DestinationConfig.OnSuccess", _UNSUPPORTED_DESTINATION))
    if dest and dest.OnFailure and dest.OnFailure.Destination and not _is_service(
        dest.OnFailure.Destination, ("sqs", "sns", "s3")
    ):
        issues.append(ConfigIssue(f"{path}.DestinationConfig.OnFailure.Destination",
                                  "must be the ARN of a standard SQS queue, standard SNS topic or S3 bucket"))
    return issues


def _check_isolation(esm: EventSourceMapping, path: str) -> list[ConfigIssue]:
    """The broker's IsolateFailingKeys needs a rule that names the failing record."""
    if not esm.IsolateFailingKeys:
        return []
    issues = []
    if not (esm.report_batch_item_failures or esm.BisectBatchOnFunctionError):
        issues.append(ConfigIssue(f"{path}.IsolateFailingKeys", (
            "IsolateFailingKeys needs FunctionResponseTypes [ReportBatchItemFailures] or "
            "BisectBatchOnFunctionError: true, which name the failing record")))
    if esm.TumblingWindowInSeconds:
        issues.append(ConfigIssue(f"{path}.IsolateFailingKeys",
                                  "IsolateFailingKeys cannot be used with TumblingWindowInSeconds"))
    return issues


def apply_defaults(esm: EventSourceMapping) -> None:
    """Fill AWS's per-source defaults into the fields left out (docs/aws-semantics.md, "Mapping parameters")."""
    esm.UUID = mapping_uuid(esm)
    if source_kind(esm.EventSourceArn) is SourceKind.SQS:
        esm.BatchSize = esm.BatchSize or 10
        esm.MaximumBatchingWindowInSeconds = esm.MaximumBatchingWindowInSeconds or 0
        return
    esm.BatchSize = esm.BatchSize or 100
    esm.MaximumBatchingWindowInSeconds = esm.MaximumBatchingWindowInSeconds or 0
    esm.ParallelizationFactor = esm.ParallelizationFactor or 1
    esm.MaximumRetryAttempts = -1 if esm.MaximumRetryAttempts is None else esm.MaximumRetryAttempts
    esm.MaximumRecordAgeInSeconds = (
        -1 if esm.MaximumRecordAgeInSeconds is None else esm.MaximumRecordAgeInSeconds)
    esm.BisectBatchOnFunctionError = bool(esm.BisectBatchOnFunctionError)
    esm.TumblingWindowInSeconds = esm.TumblingWindowInSeconds or 0
