"""AWS Signature Version 4 on every Lambda route, and IAM-style permissions per access key.

Verification recomputes the signature with botocore's own signer (``SigV4Auth``: canonical
request, string to sign, signing key) over exactly the headers the client signed, for service
``lambda`` in the configured region, and compares in constant time. What AWS checks and answers:

    no Authorization header                 403 MissingAuthenticationTokenException
    unknown access key                      403 UnrecognizedClientException
    bad signature, wrong scope, clock skew  403 InvalidSignatureException  (skew: 5 minutes)
    key not allowed this action/resource    403 AccessDeniedException

Authorization happens before the route runs, on the resource named in the path (a function ARN
built from the name, whether or not it exists), so a refusal never tells whether a function
exists. ``X-Amz-Security-Token`` is accepted and ignored (it is signed like any header).
``/healthz``, ``/readyz`` and ``/metrics`` are open. Failures are counted and logged with the key
id and the route template, never the secret or the signature. A request without a signature but
with the console's session cookie is that key's (``api/sessions.py``).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import structlog
from aiohttp import web
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest, HTTPHeaders
from botocore.credentials import Credentials

from broker.api.errors import aws_error
from broker.api.keys import Key, keys_of
from broker.api.routes import action_of, is_open, template
from broker.api.sessions import COOKIE, Sessions
from broker.arns import function_arn, mapping_arn, resolve_name
from broker.clock import Clock
from broker.config.models import ApiSettings
from broker.observability.metrics import Metrics

log = structlog.get_logger("broker.api")
MAX_SKEW = timedelta(minutes=5)
_AUTH = re.compile(r"^AWS4-HMAC-SHA256\s+Credential=(?P<cred>[^,\s]+),\s*SignedHeaders=(?P<signed>[^,\s]+),"
                   r"\s*Signature=(?P<sig>[0-9a-f]{64})\s*$")
_BAD_SIGNATURE = ("The request signature we calculated does not match the signature you provided. Check your "
                  "AWS Secret Access Key and signing method. Consult the service documentation for details.")

class _Verifier(SigV4Auth):  # type: ignore[misc]
    """botocore's signer, limited to the headers the client said it signed."""

    def __init__(self, secret: str, region: str, signed: list[str]) -> None:
        super().__init__(Credentials("verifier", secret), "lambda", region)
        self._signed = signed

    def headers_to_sign(self, request: AWSRequest) -> HTTPHeaders:
        headers = HTTPHeaders()
        for name in self._signed:
            for value in request.headers.get_all(name) or []:
                headers.add_header(name, value)
        return headers


class SigV4:
    """The middleware: who is calling (authentication), and may they (authorization)."""

    def __init__(self, keys: list[Key], *, region: str, account: str, clock: Clock, metrics: Metrics) -> None:
        self._keys = {k.access_key_id: k for k in keys}
        self._region = region
        self._account = account
        self._clock = clock
        self._m_failures = metrics.auth_failures
        self.sessions = Sessions(lambda: self._keys, clock.time)  # the console's sign-in

    def rotate(self, api: ApiSettings) -> None:
        """Key rotation without a restart: the next request is checked against the keys ``api`` gives
        now (secret files already read); one line names the key ids added, removed and changed (a new
        secret or new permissions)."""
        new = {k.access_key_id: k for k in keys_of(api)}
        old, self._keys = self._keys, new
        added, removed = sorted(set(new) - set(old)), sorted(set(old) - set(new))
        changed = sorted(k for k in set(new) & set(old) if new[k] != old[k])
        if added or removed or changed:
            log.info("api_keys_rotated", added=added, removed=removed, changed=changed)

    @web.middleware
    async def middleware(self, request: web.Request,
                         handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        declared = request.match_info.handler
        if is_open(declared):
            return await handler(request)
        route = template(request)
        key, refusal = await self._authenticate(request, route)
        if refusal is not None:
            return refusal
        assert key is not None
        if request.match_info.http_exception is None:  # a route of ours (else Lambda's 404/405 follows)
            action = action_of(declared)
            if action is None:  # a route that declared no action is refused, never served unchecked
                log.error("route_without_action", route=route, method=request.method)
                return self._fail("denied", key.access_key_id, request, route, aws_error(
                    403, "AccessDeniedException", f"No IAM action is declared for {request.method} {route}"))
            resource = self._resource(request, route)
            if not key.allows(action, resource):
                return self._fail("denied", key.access_key_id, request, route, aws_error(
                    403, "AccessDeniedException",
                    f"User: arn:aws:iam::{self._account}:user/{key.access_key_id} is not authorized to perform: "
                    f"{action} on resource: {resource} because no identity-based policy allows the {action} "
                    "action"))
        return await handler(request)

    async def _authenticate(self, request: web.Request, route: str) -> tuple[Key | None, web.Response | None]:
        header = request.headers.get("Authorization")
        if not header and COOKIE in request.cookies:  # the console, signed in (api/sessions.py)
            return self._session(request, route)
        if not header:
            return None, self._fail("missing", "", request, route, aws_error(
                403, "MissingAuthenticationTokenException", "Missing Authentication Token"))
        parsed = _AUTH.match(header)
        if parsed is None:
            return None, self._fail("malformed", "", request, route, aws_error(
                400, "IncompleteSignatureException",
                "Authorization header requires 'Credential', 'SignedHeaders' and 'Signature' parameters "
                "(AWS4-HMAC-SHA256)."))
        key_id, _, scope = parsed.group("cred").partition("/")
        key = self._keys.get(key_id)
        if key is None:
            return None, self._fail("unknown_key", key_id, request, route, aws_error(
                403, "UnrecognizedClientException", "The security token included in the request is invalid."))
        problem = self._check_scope(scope) or self._check_clock(request)
        if problem is None:
            body = await request.read()
            content_hash = request.headers.get("X-Amz-Content-SHA256")
            if content_hash is not None and not hmac.compare_digest(content_hash, hashlib.sha256(body).hexdigest()):
                problem = "The provided 'x-amz-content-sha256' header does not match what was computed."
            elif not hmac.compare_digest(self._signature(request, key, parsed.group("signed"), body),
                                         parsed.group("sig")):
                problem = _BAD_SIGNATURE
        if problem is not None:
            return None, self._fail("bad_signature", key_id, request, route,
                                    aws_error(403, "InvalidSignatureException", problem))
        return key, None

    def _session(self, request: web.Request, route: str) -> tuple[Key | None, web.Response | None]:
        key, why = self.sessions.of_request(request)
        if key is None:
            return None, self._fail("session", "", request, route, aws_error(403, "AccessDeniedException", why))
        return key, None

    def _check_scope(self, scope: str) -> str | None:
        parts = scope.split("/")
        if len(parts) != 4 or parts[3] != "aws4_request":
            return "Credential should be scoped to a valid region."
        if parts[1] != self._region:
            return f"Credential should be scoped to a valid region, not '{parts[1]}'."
        if parts[2] != "lambda":
            return "Credential should be scoped to correct service: 'lambda'."
        return None

    def _check_clock(self, request: web.Request) -> str | None:
        stamp = request.headers.get("X-Amz-Date", "")
        try:
            signed_at = datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        except ValueError:
            return "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header."
        now = datetime.fromtimestamp(self._clock.time(), UTC)
        fmt = "%Y%m%dT%H%M%SZ"
        if signed_at < now - MAX_SKEW:
            return (f"Signature expired: {stamp} is now earlier than {(now - MAX_SKEW).strftime(fmt)} "
                    f"({now.strftime(fmt)} - 5 min.)")
        if signed_at > now + MAX_SKEW:
            return (f"Signature not yet current: {stamp} is still later than {(now + MAX_SKEW).strftime(fmt)} "
                    f"({now.strftime(fmt)} + 5 min.)")
        return None

    def _signature(self, request: web.Request, key: Key, signed: str, body: bytes) -> str:
        names = signed.split(";")
        aws = AWSRequest(method=request.method, url=f"http://{request.host}{request.raw_path}", data=body)
        aws.headers = HTTPHeaders()
        for name, value in request.headers.items():
            if name.lower() in names:
                aws.headers.add_header(name.lower(), value)
        aws.context["timestamp"] = request.headers.get("X-Amz-Date", "")
        signer = _Verifier(key.secret, self._region, names)
        canonical = signer.canonical_request(aws)
        return str(signer.signature(signer.string_to_sign(aws, canonical), aws))

    def _resource(self, request: web.Request, route: str) -> str:
        info = request.match_info
        if "name" in info:
            name, qualifier = resolve_name(info["name"], self._account)
            return function_arn(self._region, self._account, name, request.query.get("Qualifier", qualifier))
        if "uuid" in info:
            return mapping_arn(self._region, self._account, info["uuid"])
        if "arn" in info:
            return info["arn"]
        return "*"

    def _fail(self, reason: str, key_id: str, request: web.Request, route: str,
              response: web.Response) -> web.Response:
        self._m_failures.labels(reason).inc()
        log.warning("auth_failed", reason=reason, access_key_id=key_id or None, method=request.method, route=route)
        return response
