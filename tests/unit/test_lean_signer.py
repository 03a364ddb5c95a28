"""The lean GetRecords signer produces byte for byte the Authorization that botocore's
``SigV4Auth.add_auth`` produces for the same request at the same instant."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from botocore import auth as botocore_auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import ReadOnlyCredentials

from broker.aws.lean import JsonPostSigner

CASES = [
    ("kinesis", "Kinesis_20131202.GetRecords", "1.1", "http://127.0.0.1:4567", "127.0.0.1:4567"),
    ("kinesis", "Kinesis_20131202.GetRecords", "1.1", "https://kinesis.eu-west-1.amazonaws.com",
     "kinesis.eu-west-1.amazonaws.com"),
    ("dynamodb", "DynamoDBStreams_20120810.GetRecords", "1.0", "https://streams.dynamodb.us-east-1.amazonaws.com",
     "streams.dynamodb.us-east-1.amazonaws.com"),
]
TOKENS = [None, "IQoJb3JpZ2luX2VjEJr//////////wEaCXVzLWVhc3QtMSJHMEUCIQD+abc/def=="]
INSTANTS = [1_764_633_599.0, 1_764_633_600.0, 1_700_000_000.25]  # either side of midnight UTC, a fraction


def _headers(head: bytes) -> dict[str, str]:
    lines = head.decode().split("\r\n")
    assert lines[0] == "POST / HTTP/1.1"
    assert lines[-2:] == ["", ""]
    return dict(line.split(": ", 1) for line in lines[1:-2])


@pytest.mark.parametrize(("service", "target", "version", "url", "host"), CASES)
@pytest.mark.parametrize("token", TOKENS)
@pytest.mark.parametrize("instant", INSTANTS)
def test_same_authorization_as_botocore(monkeypatch: pytest.MonkeyPatch, service: str, target: str,
                                        version: str, url: str, host: str, token: str | None,
                                        instant: float) -> None:
    credentials = ReadOnlyCredentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token)
    content_type = f"application/x-amz-json-{version}"
    body = json.dumps({"ShardIterator": "AAAA/bbb+ccc==", "Limit": 100}, separators=(",", ":")).encode()

    signer = JsonPostSigner(host=host, content_type=content_type, target=target, service=service,
                            region="eu-west-1", now=lambda: instant)
    ours = _headers(signer.head(credentials, body))

    monkeypatch.setattr(botocore_auth, "get_current_datetime",
                        lambda: dt.datetime.fromtimestamp(int(instant), dt.UTC).replace(tzinfo=None))
    request = AWSRequest(method="POST", url=url + "/", data=body,
                         headers={"Content-Type": content_type, "X-Amz-Target": target})
    botocore_auth.SigV4Auth(credentials, service, "eu-west-1").add_auth(request)

    assert ours["Authorization"] == request.headers["Authorization"]
    assert ours["X-Amz-Date"] == request.headers["X-Amz-Date"]
    assert ours.get("X-Amz-Security-Token") == request.headers.get("X-Amz-Security-Token")
    assert ours["Host"] == host
    assert ours["Content-Length"] == str(len(body))


def test_new_credentials_sign_with_the_new_key() -> None:
    body = b"{}"
    signer = JsonPostSigner(host="h", content_type="application/x-amz-json-1.1", target="T.Op",
                            service="kinesis", region="us-east-1", now=lambda: 1_764_633_600.0)
    first = _headers(signer.head(ReadOnlyCredentials("AKID1", "secret1", None), body))["Authorization"]
    second = _headers(signer.head(ReadOnlyCredentials("AKID2", "secret2", None), body))["Authorization"]
    assert "Credential=AKID1/" in first
    assert "Credential=AKID2/" in second
    assert first.rsplit("=", 1)[1] != second.rsplit("=", 1)[1]


def test_one_signer_across_midnight_matches_botocore_on_both_days(monkeypatch: pytest.MonkeyPatch) -> None:
    # The signing key is derived once a day: the day after, it must be derived again.
    credentials = ReadOnlyCredentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", None)
    body = b'{"ShardIterator":"x","Limit":1}'
    clock = {"now": 1_764_633_598.0}
    signer = JsonPostSigner(host="127.0.0.1:4567", content_type="application/x-amz-json-1.1",
                            target="Kinesis_20131202.GetRecords", service="kinesis", region="us-east-1",
                            now=lambda: clock["now"])
    for instant in (1_764_633_598.0, 1_764_633_599.0, 1_764_633_600.0, 1_764_633_601.0):
        clock["now"] = instant
        ours = _headers(signer.head(credentials, body))["Authorization"]
        monkeypatch.setattr(botocore_auth, "get_current_datetime",
                            lambda at=instant: dt.datetime.fromtimestamp(int(at), dt.UTC).replace(tzinfo=None))
        request = AWSRequest(method="POST", url="http://127.0.0.1:4567/", data=body,
                             headers={"Content-Type": "application/x-amz-json-1.1",
                                      "X-Amz-Target": "Kinesis_20131202.GetRecords"})
        botocore_auth.SigV4Auth(credentials, "kinesis", "us-east-1").add_auth(request)
        assert ours == request.headers["Authorization"], instant
