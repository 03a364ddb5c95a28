"""AWS clients: the User-Agent is built once per client, not on every request."""

from __future__ import annotations

import pytest

from broker.aws import AwsClients


@pytest.mark.parametrize("service", ["kinesis", "sqs"])
async def test_user_agent_is_built_once(service: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    clients = AwsClients(region="us-east-1", endpoint_url="http://127.0.0.1:1")
    try:
        client = await clients.client(service)
        creator = client._user_agent_creator
        first = creator.to_string()
        assert "botocore" in first.lower()
        assert creator.to_string() is first  # the frozen string, not a rebuild
    finally:
        await clients.aclose()
