"""The account id when the config leaves it empty: the account of the broker's credentials, asked
from STS GetCallerIdentity once at start, if the config talks to AWS at all."""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable

import structlog

from broker.api import server
from broker.aws.clients import AwsClients
from broker.config.models import Config
from broker.errors import BrokerError

log = structlog.get_logger("broker.app")
_WAITING = "the account id from STS GetCallerIdentity (account_id is empty)"
UNUSED_ACCOUNT = "000000000000"  # the account in the ARNs of a broker that talks to no AWS service


def uses_aws(config: Config) -> bool:
    """Whether the config talks to AWS at all: an endpoint, a mapping, a Lambda target, a destination
    or a DLQ. A broker of HTTP and Python targets only has no account to ask for."""
    if config.broker.aws_endpoint_url or config.event_source_mappings:
        return True
    for fn in config.functions.values():
        destinations = fn.EventInvokeConfig.DestinationConfig
        if fn.Target.Lambda or (fn.DeadLetterConfig and fn.DeadLetterConfig.TargetArn) or (destinations and any(
                d is not None and d.Destination for d in (destinations.OnSuccess, destinations.OnFailure))):
            return True
    return False


async def resolve(config: Config, aws: AwsClients,
                  when_reachable: Callable[[str, Callable[[], Awaitable[str]]], Awaitable[str]],
                  api_socket: socket.socket) -> str:
    """The account the broker's ARNs name: the config's; else, for a broker that talks to AWS, the
    account of its credentials; else ``UNUSED_ACCOUNT`` (said once)."""
    if config.broker.account_id:
        return config.broker.account_id
    if not uses_aws(config):
        log.info("account_not_needed", account_id=UNUSED_ACCOUNT,
                 note="the config names no AWS resource; set account_id to put yours in the ARNs")
        return UNUSED_ACCOUNT
    return await discover(aws, when_reachable, api_socket)


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
