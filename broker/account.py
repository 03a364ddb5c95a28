"""The account id when the config leaves it empty: the account of the broker's credentials, asked
from STS GetCallerIdentity once at start."""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable

import structlog

from broker.api import server
from broker.aws.clients import AwsClients
from broker.errors import BrokerError

log = structlog.get_logger("broker.app")
_WAITING = "the account id from STS GetCallerIdentity (account_id is empty)"


async def discover(aws: AwsClients, when_reachable: Callable[[str, Callable[[], Awaitable[str]]], Awaitable[str]],
                   api_socket: socket.socket) -> str:
    """One call; if AWS does not answer, waited for like any AWS call at start-up, while the port
    answers /healthz (alive) and /readyz (not ready, saying why)."""
    try:
        found = await aws.caller_account(attempts=1)
    except BrokerError as exc:
        if not exc.retryable:
            raise
        holding = await server.hold(api_socket, _WAITING)
        try:
            found = await when_reachable(_WAITING, aws.caller_account)
        finally:
            await holding.cleanup()
    log.info("account_discovered", account_id=found, source="sts:GetCallerIdentity")
    return found
