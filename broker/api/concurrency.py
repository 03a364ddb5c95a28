"""Lambda's concurrency API (docs/aws-semantics.md, "Concurrency"): PutFunctionConcurrency / DeleteFunctionConcurrency
(``/2017-10-31/functions/{FunctionName}/concurrency``), GetFunctionConcurrency
(``/2019-09-30/...``) and GetAccountSettings (``/2016-08-19/account-settings``), with Lambda's shapes
and errors, so boto3's ``put_function_concurrency`` and friends work unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web

from broker.api.bodies import parse_json
from broker.api.errors import Handler, aws_error, store_guarded
from broker.api.routes import needs
from broker.arns import function_arn, resolve_name
from broker.concurrency.reservations import Reservations
from broker.errors import ReservationRefused

# What GetAccountSettings reports besides concurrency: Lambda's default code-size quotas (the broker
# runs no code packages, so usage is 0).
_CODE_LIMITS = {"TotalCodeSize": 80530636800, "CodeSizeUnzipped": 262144000, "CodeSizeZipped": 52428800}


class _Api:
    def __init__(self, functions: Mapping[str, Any], reservations: Reservations, region: str, account: str,
                 account_limit: Callable[[], int]) -> None:
        self._functions = functions
        self._reservations = reservations
        self._region = region
        self._account = account
        self._account_limit = account_limit

    def routes(self) -> list[web.RouteDef]:
        def g(handler: Handler) -> Handler:
            return store_guarded(handler, "concurrency store")
        return [
            web.put("/2017-10-31/functions/{name}/concurrency", needs("lambda:PutFunctionConcurrency", g(self.put))),
            web.delete("/2017-10-31/functions/{name}/concurrency",
                       needs("lambda:DeleteFunctionConcurrency", g(self.delete))),
            web.get("/2019-09-30/functions/{name}/concurrency", needs("lambda:GetFunctionConcurrency", g(self.get))),
            web.get("/2016-08-19/account-settings", needs("lambda:GetAccountSettings", g(self.account_settings))),
            web.get("/2016-08-19/account-settings/", needs("lambda:GetAccountSettings", g(self.account_settings))),
        ]

    def _function(self, request: web.Request) -> tuple[str, web.Response | None]:
        name, qualifier = resolve_name(request.match_info["name"], self._account)
        qualifier = request.query.get("Qualifier", qualifier)
        arn = function_arn(self._region, self._account, name)
        if qualifier:  # reserved concurrency belongs to the function, never to a version or alias
            return name, aws_error(400, "InvalidParameterValueException",
                                   f"Reserved concurrency applies to the unqualified function; remove the qualifier "
                                   f"from {arn}:{qualifier}")
        if name in self._functions:
            return name, None
        return name, aws_error(404, "ResourceNotFoundException", f"Function not found: {arn}")

    async def put(self, request: web.Request) -> web.Response:
        name, missing = self._function(request)
        if missing:
            return missing
        try:
            body = parse_json(await request.read() or b"{}")
        except ValueError:
            return aws_error(400, "InvalidRequestContentException", "Could not parse request body into json")
        value = body.get("ReservedConcurrentExecutions") if isinstance(body, dict) else None
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            return aws_error(400, "ValidationException",
                             f"1 validation error detected: Value '{value}' at 'reservedConcurrentExecutions' "
                             "failed to satisfy constraint: Member must have value greater than or equal to 0")
        try:
            await self._reservations.put(name, value)
        except ReservationRefused as exc:
            return aws_error(400, "InvalidParameterValueException", str(exc))
        return web.json_response({"ReservedConcurrentExecutions": value})

    async def get(self, request: web.Request) -> web.Response:
        name, missing = self._function(request)
        if missing:
            return missing
        reserved = self._reservations.reserved(name)
        return web.json_response({} if reserved is None else {"ReservedConcurrentExecutions": reserved})

    async def delete(self, request: web.Request) -> web.Response:
        name, missing = self._function(request)
        if missing:
            return missing
        await self._reservations.delete(name)
        return web.Response(status=204)

    async def account_settings(self, _: web.Request) -> web.Response:
        return web.json_response({
            "AccountLimit": {**_CODE_LIMITS, "ConcurrentExecutions": self._account_limit(),
                             "UnreservedConcurrentExecutions": self._reservations.unreserved()},
            "AccountUsage": {"TotalCodeSize": 0, "FunctionCount": len(self._functions)},
        })


def routes(functions: Mapping[str, Any], reservations: Reservations, *, region: str, account: str,
           account_limit: Callable[[], int]) -> list[web.RouteDef]:
    return _Api(functions, reservations, region, account, account_limit).routes()
