"""Lambda's EventInvokeConfig API (docs/aws-semantics.md, "EventInvokeConfig") under
``/2019-09-25/functions/{FunctionName}/event-invoke-config``:
PUT (replace), POST (update given fields), GET, DELETE, and ``GET .../list``. Codes, messages and
shapes follow Lambda, so boto3's ``put_function_event_invoke_config`` and friends work unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from broker.api.bodies import parse_json
from broker.api.errors import Handler, aws_error, store_guarded
from broker.api.invoke import Invokable
from broker.api.routes import needs
from broker.arns import function_arn, is_fifo, parse_arn, resolve_name
from broker.async_invoke.invoke_config import FIELDS, StoredConfig
from broker.config.models import EventInvokeConfigSpec

_PATH = "/2019-09-25/functions/{name}/event-invoke-config"
_RANGES = {"MaximumRetryAttempts": (0, 2), "MaximumEventAgeInSeconds": (60, 21600)}
_SERVICES = {"OnSuccess": ("sqs", "sns", "lambda", "events"), "OnFailure": ("sqs", "sns", "lambda", "events", "s3")}


def shape(stored: StoredConfig, function_arn: str) -> dict[str, Any]:
    """``FunctionEventInvokeConfig``: omitted settings stay absent; DestinationConfig always shown."""
    dest = stored.settings.get("DestinationConfig") or {}
    out: dict[str, Any] = {"LastModified": stored.last_modified, "FunctionArn": f"{function_arn}:$LATEST"}
    out.update({k: stored.settings[k] for k in ("MaximumRetryAttempts", "MaximumEventAgeInSeconds")
                if k in stored.settings})
    out["DestinationConfig"] = {kind: dict(dest.get(kind) or {}) for kind in ("OnSuccess", "OnFailure")}
    return out


def _validation_error(field: str, value: Any, constraint: str) -> web.Response:
    return aws_error(400, "ValidationException",
                     f"1 validation error detected: Value '{value}' at '{field[0].lower() + field[1:]}' "
                     f"failed to satisfy constraint: {constraint}")


def _check(body: Any, name: str) -> dict[str, Any] | web.Response:
    """The request's settings, or Lambda's error for them."""
    if not isinstance(body, dict):
        return aws_error(400, "InvalidRequestContentException", "The request body must be a JSON object")
    problem = _check_ranges(body)
    if problem:
        return problem
    settings = {k: body[k] for k in FIELDS if body.get(k) is not None}
    try:
        EventInvokeConfigSpec.model_validate(settings)  # shapes and types, as workers will read them
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        return aws_error(400, "InvalidParameterValueException", f"Invalid EventInvokeConfig: {problems}")
    dest = settings.get("DestinationConfig")
    if dest is not None:
        problem = _check_destinations(dest, name)
        if problem:
            return problem
    return settings


def _check_ranges(body: dict[str, Any]) -> web.Response | None:
    for field, (low, high) in _RANGES.items():
        value = body.get(field)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool):
            return _validation_error(field, value, "Member must be an integer")
        if value < low:
            return _validation_error(field, value, f"Member must have value greater than or equal to {low}")
        if value > high:
            return _validation_error(field, value, f"Member must have value less than or equal to {high}")
    return None


def _check_destinations(dest: dict[str, Any], name: str) -> web.Response | None:
    arns = {kind: (dest.get(kind) or {}).get("Destination") for kind in _SERVICES}
    invalid = False
    for kind, arn in arns.items():
        if not arn:
            continue
        try:
            parsed = parse_arn(arn)
        except ValueError:
            invalid = True
            continue
        if not parsed.resource.rstrip(":/") or not parsed.name:  # arn:aws:sqs:us-east-1:123456789012: and the like
            invalid = True
            continue
        if parsed.service == "lambda" and parsed.resource.split(":")[1:2] == [name]:
            return aws_error(400, "InvalidParameterValueException",
                             "You can't specify the function as a destination for itself.")
        invalid = invalid or parsed.service not in _SERVICES[kind] or is_fifo(arn)
    if invalid:
        parts = {kind: f"{kind}(destination={arn})" if arn else "null" for kind, arn in arns.items()}
        return aws_error(400, "InvalidParameterValueException",
                         f"The provided destination config DestinationConfig(onSuccess={parts['OnSuccess']}, "
                         f"onFailure={parts['OnFailure']}) is invalid.")
    return None


class _Api:
    def __init__(self, functions: Mapping[str, Invokable], region: str, account: str) -> None:
        self._functions = functions
        self._region = region
        self._account = account

    def routes(self) -> list[web.RouteDef]:
        def g(handler: Handler) -> Handler:
            return store_guarded(handler, "config store")
        return [web.put(_PATH, needs("lambda:PutFunctionEventInvokeConfig", g(self.put))),
                web.post(_PATH, needs("lambda:UpdateFunctionEventInvokeConfig", g(self.update))),
                web.get(_PATH, needs("lambda:GetFunctionEventInvokeConfig", g(self.get))),
                web.delete(_PATH, needs("lambda:DeleteFunctionEventInvokeConfig", g(self.delete))),
                web.get(_PATH + "/list", needs("lambda:ListFunctionEventInvokeConfigs", g(self.list_configs)))]

    def _target(self, request: web.Request) -> tuple[str, Invokable | None]:
        name, qualifier = resolve_name(request.match_info["name"], self._account)
        qualifier = request.query.get("Qualifier", qualifier)
        return name, self._functions.get(name) if qualifier in (None, "$LATEST") else None

    def _no_config(self, name: str) -> web.Response:
        arn = function_arn(self._region, self._account, name, "$LATEST")
        return aws_error(404, "ResourceNotFoundException", f"The function {arn} doesn't have an EventInvokeConfig")

    @staticmethod
    def _no_function() -> web.Response:
        return aws_error(404, "ResourceNotFoundException", "The function doesn't exist.")

    @staticmethod
    async def _settings(request: web.Request, name: str) -> dict[str, Any] | web.Response:
        try:
            body = parse_json(await request.read() or b"{}")
        except ValueError:
            return aws_error(400, "InvalidRequestContentException", "Could not parse request body into json")
        settings = _check(body, name)
        if isinstance(settings, dict) and not settings:
            return aws_error(400, "InvalidParameterValueException",
                             "You must specify at least one of error handling or destination setting.")
        return settings

    async def put(self, request: web.Request) -> web.Response:
        """PutFunctionEventInvokeConfig: replace (omitted settings are removed)."""
        return await self._write(request, merge=False)

    async def update(self, request: web.Request) -> web.Response:
        """UpdateFunctionEventInvokeConfig: change the given settings of an existing config."""
        return await self._write(request, merge=True)

    async def _write(self, request: web.Request, *, merge: bool) -> web.Response:
        name, fn = self._target(request)
        if fn is None:
            return self._no_function()
        settings = await self._settings(request, name)
        if isinstance(settings, web.Response):
            return settings
        if merge:
            existing = await fn.invoke_config.get()
            if existing is None:
                return self._no_config(name)
            settings = existing.settings | settings
        return web.json_response(shape(await fn.invoke_config.put(settings), fn.function.arn))

    async def get(self, request: web.Request) -> web.Response:
        name, fn = self._target(request)
        stored = await fn.invoke_config.get() if fn else None
        return web.json_response(shape(stored, fn.function.arn)) if fn and stored else self._no_config(name)

    async def delete(self, request: web.Request) -> web.Response:
        name, fn = self._target(request)
        if fn is None or await fn.invoke_config.get() is None:
            return self._no_config(name)
        await fn.invoke_config.delete()
        return web.Response(status=204)

    async def list_configs(self, request: web.Request) -> web.Response:
        _, fn = self._target(request)
        if fn is None:
            return self._no_function()
        stored = await fn.invoke_config.get()
        return web.json_response({"FunctionEventInvokeConfigs": [shape(stored, fn.function.arn)] if stored else []})


def routes(functions: Mapping[str, Invokable], *, region: str, account: str) -> list[web.RouteDef]:
    return _Api(functions, region, account).routes()
