"""AWS clients, and the one boundary where botocore/aiohttp errors become ``errors.py`` errors.

Shared by the sources (SQS, Kinesis, DynamoDB Streams) and the destinations, so it sits below both.

Transport retries are tenacity's (botocore's own retries are off), driven by ``retryable``.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import urllib.parse
import urllib.request
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError
from botocore.httpsession import get_cert_path
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

from broker.aws.lean import RAW, LeanJsonCall
from broker.aws.lean_http import HttpPool
from broker.errors import AwsError, AwsThrottled, BrokerError

__all__ = ["RAW", "AwsClients", "call", "keep_raw_json", "translate"]  # RAW: the key of a raw JSON answer

_THROTTLE_CODES = frozenset({
    "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottled",
    "RequestLimitExceeded", "ProvisionedThroughputExceededException", "LimitExceededException",
    "TooManyRequestsException", "ServiceUnavailable", "InternalError", "InternalFailure",
    "KMSThrottlingException", "SlowDown",
})


def translate(exc: BaseException) -> BrokerError | None:
    """The broker error for a foreign exception raised by an AWS call, or None if not ours."""
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        code = str(err.get("Code", "Unknown"))
        message = str(err.get("Message", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        if code in _THROTTLE_CODES or status >= 500:
            return AwsThrottled(code, message)
        return AwsError(code, message)
    if isinstance(exc, BotoCoreError | aiohttp.ClientError | TimeoutError | ConnectionError):
        return AwsThrottled(type(exc).__name__, str(exc))
    return None


async def call(operation: Callable[..., Awaitable[Any]], /, attempts: int = 5, **kwargs: Any) -> Any:
    """Call one AWS operation; retryable failures are retried with jittered backoff."""
    try:  # the happy path costs one call, not a retry loop (this is the hottest path there is)
        return await operation(**kwargs)
    except (ClientError, BotoCoreError, aiohttp.ClientError, TimeoutError, ConnectionError) as exc:
        translated = translate(exc)
        assert translated is not None
        if not translated.retryable or attempts <= 1:
            raise translated from exc
    async for attempt in AsyncRetrying(
        retry=retry_if_exception(lambda e: isinstance(e, BrokerError) and e.retryable),
        wait=wait_exponential(multiplier=0.1, max=5.0) + wait_random(0, 0.1),
        stop=stop_after_attempt(attempts - 1),
        reraise=True,
    ):
        with attempt:
            try:
                return await operation(**kwargs)
            except (ClientError, BotoCoreError, aiohttp.ClientError, TimeoutError, ConnectionError) as exc:
                translated = translate(exc)
                assert translated is not None
                raise translated from exc
    raise AssertionError("unreachable")  # pragma: no cover


def keep_raw_json(client: Any, operation: str) -> None:
    """Have ``client`` hand back ``operation``'s successful response as the JSON that was sent,
    under ``response["Raw"]``, instead of botocore's parse of it (errors are parsed as usual).

    For GetRecords: botocore base64-decodes every record's blob and turns every timestamp into a
    datetime through dateutil, about 15 µs a record, only for the broker to undo both to build
    Lambda's event (which carries the base64 text and epoch seconds as sent). Uses botocore's
    ``before-parse`` event, so signing, retries and error handling stay botocore's."""
    service = client.meta.service_model.service_id.hyphenize()
    client.meta.events.register(f"before-parse.{service}.{operation}", _take_raw,
                                unique_id=f"broker-raw-json-{service}-{operation}")


def _take_raw(response_dict: dict[str, Any], customized_response_dict: dict[str, Any], **_: Any) -> None:
    if int(response_dict.get("status_code", 500)) < 300:
        customized_response_dict[RAW] = json.loads(response_dict.get("body") or b"{}")
        response_dict["body"] = b"{}"


def _freeze_user_agent(client: Any) -> None:
    """Build botocore's User-Agent once per client instead of twice per request.

    botocore rebuilds and re-sanitises the whole header on every call (once for the request dict,
    once more just before sending, to list per-request SDK features for AWS's telemetry): about a
    tenth of the CPU of a GetRecords or ReceiveMessage call (py-spy, benchmarks/sqs.py). The string
    is computed once and reused; only those per-request feature tags are lost. Guarded: if a
    botocore release renames the creator, calls go on as before, just slower."""
    creator = getattr(client, "_user_agent_creator", None)
    if creator is None or not callable(getattr(creator, "to_string", None)):
        return
    frozen = creator.to_string()
    creator.to_string = lambda: frozen


class AwsClients:
    """One aiobotocore client per service, opened lazily, closed together."""

    def __init__(self, *, region: str, endpoint_url: str | None, max_pool_connections: int = 100) -> None:
        self._region = region
        self._endpoint_url = endpoint_url
        self._config = AioConfig(
            max_pool_connections=max_pool_connections,
            retries={"total_max_attempts": 1, "mode": "standard"},
            read_timeout=70,  # above SQS's 20 s long poll
            connect_timeout=5,
            parameter_validation=False,  # requests are built by code, and validation costs ~10% CPU per call
        )
        self._session = get_session()
        self._stack = contextlib.AsyncExitStack()
        self._clients: dict[str, Any] = {}
        self._pools: dict[str, HttpPool] = {}  # the lean calls' connections, per endpoint
        self._max_connections = max_pool_connections

    async def caller_account(self, attempts: int = 5) -> str:
        """The account of the broker's credentials (STS GetCallerIdentity): the one its ARNs name
        when the config leaves ``account_id`` empty."""
        identity = await call((await self.client("sts")).get_caller_identity, attempts=attempts)
        return str(identity["Account"])

    async def client(self, service: str, endpoint_url: str | None = None) -> Any:
        """The client of ``service``, at the broker's endpoint unless ``endpoint_url`` names another."""
        endpoint = endpoint_url or self._endpoint_url
        key = f"{service}@{endpoint}"
        if key not in self._clients:
            kwargs: dict[str, Any] = {}
            if endpoint and not os.environ.get("AWS_ACCESS_KEY_ID"):
                # An emulator needs credentials of some kind, never real ones.
                kwargs = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
            client = await self._stack.enter_async_context(
                self._session.create_client(service, region_name=self._region, endpoint_url=endpoint,
                                            config=self._config, **kwargs))
            _freeze_user_agent(client)
            self._clients[key] = client
        return self._clients[key]

    async def lean(self, service: str, operation: str) -> LeanJsonCall | None:
        """``operation`` of ``service`` without botocore's per-call machinery, if its protocol is
        the JSON one this supports (else None: the caller keeps the aiobotocore path)."""
        client = await self.client(service)
        if client.meta.service_model.metadata.get("protocol") != "json":
            return None
        url = client.meta.endpoint_url
        parts = urllib.parse.urlsplit(url)
        if urllib.request.getproxies().get(parts.scheme) and not urllib.request.proxy_bypass(parts.netloc):
            return None  # botocore sends through the proxy the environment names; the lean path does not
        if url not in self._pools:
            self._pools[url] = HttpPool(url, limit=self._max_connections, connect_timeout=5, read_timeout=70,
                                        ca_bundle=os.environ.get("AWS_CA_BUNDLE") or _botocore_ca_bundle(),
                                        monotonic=time.monotonic)
        return LeanJsonCall(client, operation, self._pools[url])

    async def aclose(self) -> None:
        self._clients.clear()
        for pool in self._pools.values():
            await pool.aclose()
        self._pools.clear()
        await self._stack.aclose()


def _botocore_ca_bundle() -> str | None:
    """The CA bundle botocore verifies TLS with (certifi's, when installed)."""
    path = get_cert_path(True)
    return path if isinstance(path, str) else None
