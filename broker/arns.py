"""Parse the ARNs the broker understands into small value types."""

from __future__ import annotations

from dataclasses import dataclass

from broker.types import SourceKind


@dataclass(frozen=True, slots=True)
class Arn:
    service: str
    region: str
    account: str
    resource: str

    @property
    def name(self) -> str:
        """The last path element: queue, topic, bucket or function name."""
        return self.resource.rsplit("/", 1)[-1].split(":")[-1] if self.service == "lambda" \
            else self.resource.rsplit("/", 1)[-1]

    def __str__(self) -> str:
        return f"arn:aws:{self.service}:{self.region}:{self.account}:{self.resource}"


def parse_arn(text: str) -> Arn:
    """Split ``arn:partition:service:region:account:resource``; raise ValueError if it is not one."""
    parts = text.split(":", 5)
    if len(parts) != 6 or parts[0] != "arn" or not parts[2] or not parts[5]:
        raise ValueError(f"not an ARN: {text!r}")
    return Arn(service=parts[2], region=parts[3], account=parts[4], resource=parts[5])


def source_kind(text: str) -> SourceKind:
    """Which poller an EventSourceArn needs; ValueError names an unsupported one."""
    arn = parse_arn(text)
    if arn.service == "sqs" and arn.resource and "/" not in arn.resource:
        return SourceKind.SQS
    if arn.service == "kinesis" and arn.resource.startswith("stream/"):
        return SourceKind.KINESIS
    if arn.service == "dynamodb" and "/stream/" in arn.resource:
        return SourceKind.DYNAMODB
    raise ValueError(f"unsupported event source ARN: {text}")


def is_fifo(arn_text: str) -> bool:
    return arn_text.endswith(".fifo")


def function_arn(region: str, account: str, name: str, qualifier: str | None = None) -> str:
    return f"arn:aws:lambda:{region}:{account}:function:{name}" + (f":{qualifier}" if qualifier else "")


def mapping_arn(region: str, account: str, uuid: str) -> str:
    return f"arn:aws:lambda:{region}:{account}:event-source-mapping:{uuid}"


def resolve_name(raw: str, account: str = "") -> tuple[str, str | None]:
    """Name, ``name:qualifier``, full or partial ARN → (name, qualifier)."""
    parts = raw.split(":")
    if raw.startswith("arn:") and len(parts) >= 7:
        return parts[6], parts[7] if len(parts) > 7 else None
    if len(parts) >= 3 and parts[1] == "function":  # partial ARN: account:function:name[:qualifier]
        return parts[2], parts[3] if len(parts) > 3 else None
    if len(parts) == 2:
        return parts[0], parts[1]
    return raw, None
