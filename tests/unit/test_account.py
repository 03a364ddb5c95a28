"""Which account the ARNs name when account_id is empty: STS only for a broker that talks to AWS."""

from __future__ import annotations

import textwrap
from typing import Any

import pytest

from broker import account
from broker.config import parse_config

Q = "arn:aws:sqs:us-east-1:000000000000:q"


def config(text: str) -> Any:
    return parse_config(textwrap.dedent(text), env={})


@pytest.mark.parametrize(("text", "expected"), [
    ("functions: {f: {Target: {Url: 'http://t'}}}", False),
    ("functions: {f: {Target: {Handler: 'm:h'}}}", False),
    ("broker: {aws_endpoint_url: 'http://127.0.0.1:1'}\nfunctions: {f: {Target: {Url: 'http://t'}}}", True),
    (f"functions: {{f: {{Target: {{Url: 'http://t'}}}}}}\nevent_source_mappings: [{{FunctionName: f, EventSourceArn: '{Q}'}}]",
     True),
    ("functions: {f: {Target: {Lambda: 'arn:aws:lambda:us-east-1:123456789012:function:g'}}}", True),
    (f"functions: {{f: {{Target: {{Url: 'http://t'}}, DeadLetterConfig: {{TargetArn: '{Q}'}}}}}}", True),
    (f"functions: {{f: {{Target: {{Url: 'http://t'}}, EventInvokeConfig: {{DestinationConfig: {{OnFailure: "
     f"{{Destination: '{Q}'}}}}}}}}}}", True),
])
def test_only_a_config_that_names_aws_needs_an_account(text: str, expected: bool) -> None:
    assert account.uses_aws(config(text)) is expected


async def test_an_explicit_account_or_no_aws_needs_no_sts() -> None:
    explicit = config("broker: {account_id: '123456789012'}\nfunctions: {f: {Target: {Url: 'http://t'}}}")
    offline = config("functions: {f: {Target: {Url: 'http://t'}}}")

    async def never(*_: Any) -> str:
        raise AssertionError("STS was asked")

    assert await account.resolve(explicit, None, never, None) == "123456789012"  # type: ignore[arg-type]
    assert await account.resolve(offline, None, never, None) == account.UNUSED_ACCOUNT  # type: ignore[arg-type]
