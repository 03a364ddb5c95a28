"""The lean path of one JSON-protocol AWS operation (GetRecords of Kinesis and DynamoDB Streams):
the call every idle shard makes every second, sent without botocore's per-call machinery.

- Credentials are the aiobotocore client's own provider chain (IRSA, profiles, environment keys,
  refreshed as botocore refreshes them).
- Signing is botocore's ``SigV4Auth``: its string to sign, key derivation, signature and scope.
  Only the canonical request is built here, because every request has the same shape (``POST /``
  with Content-Type, Host, X-Amz-Date, X-Amz-Target and, with temporary credentials,
  X-Amz-Security-Token): building it through ``AWSRequest`` cost ~85 µs a call, most of it in
  ``email.message`` headers and URL parsing. A unit test checks that the Authorization header is
  byte for byte the one ``SigV4Auth.add_auth`` produces.
- Transport is ``lean_http.HttpPool``; the response is the JSON as sent (like ``keep_raw_json``).
- A failure becomes botocore's ``ClientError`` (or a ``ConnectionError``/``TimeoutError``) so
  ``aws.call`` classifies it exactly as on the aiobotocore path: throttles and 5xx retryable,
  expired iterators not.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from typing import Any

from botocore.auth import SigV4Auth
from botocore.exceptions import ClientError

from broker.aws.lean_http import HttpPool

RAW = "Raw"
_dumps = json.JSONEncoder(separators=(",", ":")).encode


class _DailyKeySigV4(SigV4Auth):  # type: ignore[misc]
    """botocore's ``SigV4Auth``, deriving the signing key (four HMACs, with its own ``_sign``) once
    a day instead of on every request."""

    def __init__(self, credentials: Any, service: str, region: str) -> None:
        super().__init__(credentials, service, region)
        self._day = ""
        self._key = b""

    def signature(self, string_to_sign: str, request: Any) -> str:
        day = request.context["timestamp"][:8]
        if day != self._day:
            key = self._sign(f"AWS4{self.credentials.secret_key}".encode(), day)
            for part in (self._region_name, self._service_name, "aws4_request"):
                key = self._sign(key, part)
            self._day, self._key = day, key
        return str(self._sign(self._key, string_to_sign, hex=True))


class _Signing:
    """What ``SigV4Auth`` reads of a request besides its canonical form."""

    __slots__ = ("context",)

    def __init__(self, timestamp: str) -> None:
        self.context = {"timestamp": timestamp}


class JsonPostSigner:
    """SigV4 headers for ``POST /`` of one JSON-protocol operation to one host."""

    def __init__(self, *, host: str, content_type: str, target: str, service: str, region: str,
                 now: Callable[[], float] = time.time) -> None:
        self._host = host
        self._content_type = content_type
        self._target = target
        self._service = service
        self._region = region
        self._now = now
        self._auth: _DailyKeySigV4 | None = None
        self._second = -1
        self._timestamp = ""

    def head(self, credentials: Any, body: bytes) -> bytes:
        """The request line and headers (ending with the blank line) for ``body``."""
        if self._auth is None or self._auth.credentials != credentials:
            self._auth = _DailyKeySigV4(credentials, self._service, self._region)
        second = int(self._now())
        if second != self._second:
            self._second = second
            self._timestamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(second))
        timestamp, token = self._timestamp, credentials.token
        signed = "content-type;host;x-amz-date;x-amz-security-token;x-amz-target" if token \
            else "content-type;host;x-amz-date;x-amz-target"
        canonical = (f"POST\n/\n\ncontent-type:{self._content_type}\nhost:{self._host}\nx-amz-date:{timestamp}\n"
                     + (f"x-amz-security-token:{token}\n" if token else "")
                     + f"x-amz-target:{self._target}\n\n{signed}\n{hashlib.sha256(body).hexdigest()}")
        request = _Signing(timestamp)
        auth = self._auth
        signature = auth.signature(auth.string_to_sign(request, canonical), request)
        return (f"POST / HTTP/1.1\r\nHost: {self._host}\r\nContent-Type: {self._content_type}\r\n"
                f"X-Amz-Target: {self._target}\r\nX-Amz-Date: {timestamp}\r\n"
                + (f"X-Amz-Security-Token: {token}\r\n" if token else "")
                + f"Authorization: AWS4-HMAC-SHA256 Credential={auth.scope(request)}, SignedHeaders={signed}, "
                  f"Signature={signature}\r\nContent-Length: {len(body)}\r\n\r\n").encode()


class LeanJsonCall:
    """``await call(**params)`` → ``{"Raw": <the JSON answer>}``, like the aiobotocore client's
    operation with ``keep_raw_json``."""

    def __init__(self, client: Any, operation: str, pool: HttpPool,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        model = client.meta.service_model
        self._client = client
        self._operation = operation
        self._pool = pool
        self._monotonic = monotonic
        self._frozen: Any = None
        self._frozen_at = -1e18
        self._signer = JsonPostSigner(
            host=pool.host, content_type=f"application/x-amz-json-{model.metadata.get('jsonVersion', '1.0')}",
            target=f"{model.metadata['targetPrefix']}.{operation}",
            service=model.metadata.get("signingName") or model.endpoint_prefix, region=client.meta.region_name)

    async def __call__(self, **params: Any) -> dict[str, Any]:
        body = _dumps(params).encode()
        if self._monotonic() - self._frozen_at >= 1.0:
            self._frozen = await self._credentials()
            self._frozen_at = self._monotonic()
        status, answer = await self._pool.request(self._signer.head(self._frozen, body) + body)
        if status < 300:
            return {RAW: json.loads(answer or b"{}")}
        raise ClientError(_error_response(status, answer), self._operation)

    async def _credentials(self) -> Any:
        """The client's credentials as of now, asked for at most once a second (botocore refreshes
        temporary ones minutes before they expire, so a second-old copy is always still valid)."""
        creds = self._client._request_signer._credentials  # the client's provider chain, refreshed by it
        frozen = creds.get_frozen_credentials()
        return await frozen if hasattr(frozen, "__await__") else frozen


def _error_response(status: int, body: bytes) -> dict[str, Any]:
    """botocore's shape of a JSON-protocol error (``__type`` may carry a namespace: ``a.b#Code``)."""
    try:
        doc = json.loads(body or b"{}")
    except ValueError:
        doc = {}
    if not isinstance(doc, dict):
        doc = {}
    code = str(doc.get("__type", "") or doc.get("code", "") or f"HTTP{status}").rsplit("#", 1)[-1]
    message = str(doc.get("message", doc.get("Message", "")))
    return {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}}
