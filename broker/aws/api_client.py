"""A client of a broker's own API for the command line: one JSON request, signed with SigV4 by
botocore from the default credential chain (environment, profile, role) when there are
credentials, unsigned otherwise (an API without ``api.credentials``)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import botocore.session
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest


def call(method: str, url: str, body: Any = None, *, region: str = "us-east-1", timeout: float = 30.0
         ) -> tuple[int, Any]:
    """The status and JSON answer of one request (the API's error bodies included)."""
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"{url}: the endpoint must be an http:// or https:// URL")
    data = b"" if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    credentials = botocore.session.get_session().get_credentials()
    if credentials is not None:
        request = AWSRequest(method=method, url=url, data=data, headers=headers)
        SigV4Auth(credentials.get_frozen_credentials(), "lambda", region).add_auth(request)
        headers = dict(request.headers)
    req = urllib.request.Request(url, data=data if method != "GET" else None, method=method,  # noqa: S310 - http(s) only
                                 headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - the operator's endpoint
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return exc.code, json.loads(raw)
        except ValueError:
            return exc.code, {"message": raw.decode("utf-8", "replace")}
