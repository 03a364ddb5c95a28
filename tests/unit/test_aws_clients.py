"""AWS clients: the User-Agent is built once per client, not on every request."""

from __future__ import annotations

import pytest

from broker.aws.clients import AwsClients


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


@pytest.mark.parametrize(("proxy", "no_proxy", "lean"), [
    (None, None, True),
    ("http://proxy.internal:3128", None, False),  # botocore would go through it: so does GetRecords
    ("http://proxy.internal:3128", "127.0.0.1", True),
])
async def test_lean_get_records_steps_aside_for_a_proxy(monkeypatch: pytest.MonkeyPatch, proxy: str | None,
                                                        no_proxy: str | None, lean: bool) -> None:
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    if proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy)
    if no_proxy:
        monkeypatch.setenv("NO_PROXY", no_proxy)
    clients = AwsClients(region="us-east-1", endpoint_url="http://127.0.0.1:1")
    try:
        assert (await clients.lean("kinesis", "GetRecords") is not None) is lean
    finally:
        await clients.aclose()
