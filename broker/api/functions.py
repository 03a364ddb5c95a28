"""Lambda's function reads (GetFunction, GetFunctionConfiguration, ListFunctions, paged) and tags
(ListTags, TagResource, UntagResource) for the functions of the config file. Functions are declared
in the file; creating or changing them through the API is not offered. Tags live in Redis
(``{broker:fn:<name>}:tags``) so every replica answers the same."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web

from broker import redaction
from broker.api.bodies import parse_json
from broker.api.errors import aws_error, store_guarded
from broker.api.routes import needs
from broker.arns import function_arn, resolve_name
from broker.config.models import FunctionConfig
from broker.control.tags import TagStore

_SECRET_NAME = re.compile(r"SECRET|PASSWORD|PASSWD|TOKEN|KEY|CREDENTIAL", re.IGNORECASE)
_MAX_ITEMS = 50


def configuration(name: str, fn: FunctionConfig, *, region: str, account: str, last_modified: str,
                  reserved: int | None) -> dict[str, Any]:
    """``FunctionConfiguration`` as Lambda returns it (what the broker knows of it)."""
    target = fn.Target
    handler = target.Handler.replace(":", ".") if target.Handler else (
        target.Runtime.Command[-1] if target.Runtime and target.Runtime.Command else None)
    out: dict[str, Any] = {
        "FunctionName": name,
        "FunctionArn": function_arn(region, account, name),
        "Role": fn.Role or f"arn:aws:iam::{account}:role/{name}",
        "CodeSize": 0,
        "Description": fn.Description,
        "Timeout": fn.Timeout,
        "MemorySize": fn.MemorySize,
        "LastModified": last_modified,
        "CodeSha256": "",
        "Version": "$LATEST",
        "TracingConfig": {"Mode": "PassThrough"},
        "State": "Active",
        "LastUpdateStatus": "Successful",
        "PackageType": "Zip" if target.Handler else "Image",
        "Architectures": ["x86_64"],
        "EphemeralStorage": {"Size": 512},
    }
    if target.Handler:
        out["Runtime"] = "python3.11"
    if handler:
        out["Handler"] = handler
    variables = {**fn.Environment.Variables, **(target.Runtime.Environment.Variables if target.Runtime else {})}
    if variables:  # values that look like secrets are never shown
        out["Environment"] = {"Variables": {k: "***" if _SECRET_NAME.search(k) else redaction.scrub(v)
                                            for k, v in variables.items()}}
    if fn.DeadLetterConfig and fn.DeadLetterConfig.TargetArn:
        out["DeadLetterConfig"] = {"TargetArn": fn.DeadLetterConfig.TargetArn}
    return out


def lambda_time(epoch: float) -> str:
    """Lambda's LastModified for functions: ``2024-01-01T00:00:00.000+0000``."""
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "+0000"


class _Api:
    def __init__(self, functions: Callable[[], Mapping[str, FunctionConfig]], reserved: Callable[[str], int | None],
                 tags: TagStore, *, region: str, account: str, started: float) -> None:
        self._functions = functions
        self._reserved = reserved
        self._tags = tags
        self._region = region
        self._account = account
        self._started = lambda_time(started)  # LastModified: when this broker loaded the config

    def routes(self) -> list[web.RouteDef]:
        g = store_guarded
        return [
            web.get("/2015-03-31/functions", needs("lambda:ListFunctions", self.list_functions)),
            web.get("/2015-03-31/functions/", needs("lambda:ListFunctions", self.list_functions)),
            web.get("/2015-03-31/functions/{name}", needs("lambda:GetFunction", g(self.get_function, "tag store"))),
            web.get("/2015-03-31/functions/{name}/configuration",
                    needs("lambda:GetFunctionConfiguration", self.get_configuration)),
            web.get("/2017-03-31/tags/{arn}", needs("lambda:ListTags", g(self.list_tags, "tag store"))),
            web.post("/2017-03-31/tags/{arn}", needs("lambda:TagResource", g(self.tag, "tag store"))),
            web.delete("/2017-03-31/tags/{arn}", needs("lambda:UntagResource", g(self.untag, "tag store"))),
        ]

    def _arn(self, name: str) -> str:
        return function_arn(self._region, self._account, name)

    def _lookup(self, raw: str) -> tuple[str, web.Response | None]:
        name, qualifier = resolve_name(raw, self._account)
        if name in self._functions() and qualifier in (None, "$LATEST"):
            return name, None
        arn = self._arn(name) + (f":{qualifier}" if qualifier else "")
        return name, aws_error(404, "ResourceNotFoundException", f"Function not found: {arn}")

    def _config(self, name: str) -> dict[str, Any]:
        return configuration(name, self._functions()[name], region=self._region, account=self._account,
                             last_modified=self._started, reserved=self._reserved(name))

    async def list_functions(self, request: web.Request) -> web.Response:
        names = sorted(self._functions())
        try:
            limit = int(request.query.get("MaxItems", _MAX_ITEMS))
        except ValueError:
            limit = 0
        if not 1 <= limit <= 10000:
            value = request.query.get("MaxItems")
            return aws_error(400, "ValidationException", f"1 validation error detected: Value '{value}' at 'maxItems' "
                             "failed to satisfy constraint: Member must have value less than or equal to 10000 and "
                             "greater than or equal to 1")
        marker = request.query.get("Marker")
        start = names.index(marker) + 1 if marker in names else 0
        page = names[start:start + limit]
        out: dict[str, Any] = {"Functions": [self._config(n) for n in page]}
        if start + limit < len(names):
            out["NextMarker"] = page[-1]
        return web.json_response(out)

    async def get_configuration(self, request: web.Request) -> web.Response:
        name, missing = self._lookup(request.match_info["name"])
        return missing or web.json_response(self._config(name))

    async def get_function(self, request: web.Request) -> web.Response:
        name, missing = self._lookup(request.match_info["name"])
        if missing:
            return missing
        out: dict[str, Any] = {"Configuration": self._config(name),
                               "Code": {"RepositoryType": "S3", "Location": ""}, "Tags": await self._tags.get(name)}
        reserved = self._reserved(name)
        if reserved is not None:
            out["Concurrency"] = {"ReservedConcurrentExecutions": reserved}
        return web.json_response(out)

    def _tagged(self, request: web.Request) -> tuple[str, web.Response | None]:
        arn = request.match_info["arn"]
        if not arn.startswith("arn:"):
            return "", aws_error(400, "ValidationException", f"1 validation error detected: Value '{arn}' at "
                                 "'resource' failed to satisfy constraint: Member must be a function ARN")
        return self._lookup(arn)

    async def list_tags(self, request: web.Request) -> web.Response:
        name, missing = self._tagged(request)
        return missing or web.json_response({"Tags": await self._tags.get(name)})

    async def tag(self, request: web.Request) -> web.Response:
        name, missing = self._tagged(request)
        if missing:
            return missing
        try:
            body = parse_json(await request.read() or b"{}")
        except ValueError as exc:
            return aws_error(400, "InvalidRequestContentException", f"Could not parse request body into json: {exc}")
        tags = body.get("Tags") if isinstance(body, dict) else None
        if not isinstance(tags, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in tags.items()):
            return aws_error(400, "InvalidParameterValueException", "Tags must be a map of strings to strings")
        await self._tags.put(name, tags)
        return web.Response(status=204)

    async def untag(self, request: web.Request) -> web.Response:
        name, missing = self._tagged(request)
        if missing:
            return missing
        keys = request.query.getall("tagKeys", [])
        if keys:
            await self._tags.delete(name, keys)
        return web.Response(status=204)


def routes(functions: Callable[[], Mapping[str, FunctionConfig]], reserved: Callable[[str], int | None], tags: TagStore,
           *, region: str, account: str, started: float) -> list[web.RouteDef]:
    return _Api(functions, reserved, tags, region=region, account=account, started=started).routes()
