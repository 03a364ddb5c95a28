"""Deliver a record (a JSON document) to a destination ARN: SQS, SNS, S3, EventBridge.

Errors are ``errors.py`` errors (translated in ``aws/clients.py``); callers retry and count.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from broker.arns import parse_arn
from broker.aws.clients import AwsClients, call
from broker.errors import AwsError
from broker.tracing.context import TraceContext
from broker.tracing.spans import tracing

LambdaDelivery = Callable[[str, str], Awaitable[None]]  # (function ARN, event JSON): invoke asynchronously


class DestinationSender:
    def __init__(self, clients: AwsClients, lambda_delivery: LambdaDelivery | None = None) -> None:
        self._clients = clients
        self._lambda_delivery = lambda_delivery
        self._queue_urls: dict[str, str] = {}

    async def deliver(self, arn: str, document: dict[str, Any], *, s3_key: str | None = None,
                      attributes: dict[str, dict[str, str]] | None = None,
                      detail_type: str = "", body: str | None = None, trace: str = "") -> None:
        """Send ``document`` (or the raw ``body``) to ``arn``; with ``trace`` (X-Ray's header) the
        delivery is a span of that trace, and an SQS message carries it on as its AWSTraceHeader."""
        context = TraceContext.from_xray(trace)
        if context is None:
            await self._send(arn, document, s3_key=s3_key, attributes=attributes, detail_type=detail_type, body=body)
            return
        service = parse_arn(arn).service
        with tracing.span(f"deliver {service}", parent=context, kind="producer", messaging__system=f"aws_{service}",
                          messaging__operation="publish", messaging__destination__name=arn) as span:
            await self._send(arn, document, s3_key=s3_key, attributes=attributes, detail_type=detail_type, body=body,
                             trace=span.context.xray)

    async def _send(self, arn: str, document: dict[str, Any], *, s3_key: str | None,
                    attributes: dict[str, dict[str, str]] | None, detail_type: str, body: str | None,
                    trace: str = "") -> None:
        parsed = parse_arn(arn)
        text = body if body is not None else json.dumps(document)
        if parsed.service == "sqs":
            sqs = await self._clients.client("sqs")
            url = await self._queue_url(sqs, arn)
            extra: dict[str, Any] = {"MessageAttributes": attributes} if attributes else {}
            if trace:
                extra["MessageSystemAttributes"] = {"AWSTraceHeader": {"DataType": "String", "StringValue": trace}}
            await call(sqs.send_message, QueueUrl=url, MessageBody=text, **extra)
        elif parsed.service == "sns":
            sns = await self._clients.client("sns")
            extra = {"MessageAttributes": attributes} if attributes else {}
            await call(sns.publish, TopicArn=arn, Message=text, **extra)
        elif parsed.service == "s3":
            s3 = await self._clients.client("s3")
            await call(s3.put_object, Bucket=parsed.resource, Key=s3_key or "record.json",
                       Body=text.encode(), ContentType="application/json")
        elif parsed.service == "events":
            events = await self._clients.client("events")
            response = await call(events.put_events, Entries=[{
                "Source": "lambda", "DetailType": detail_type, "Detail": text,
                "EventBusName": arn, "Resources": []}])
            if response.get("FailedEntryCount"):
                raise AwsError("PutEventsFailed", json.dumps(response.get("Entries", [])))
        elif parsed.service == "lambda" and self._lambda_delivery is not None:
            await self._lambda_delivery(arn, text)
        else:
            raise AwsError("InvalidDestination", f"unsupported destination {arn}")

    async def _queue_url(self, sqs: Any, arn: str) -> str:
        if arn not in self._queue_urls:
            parsed = parse_arn(arn)
            self._queue_urls[arn] = (await call(sqs.get_queue_url, QueueName=parsed.resource,
                                                QueueOwnerAWSAccountId=parsed.account))["QueueUrl"]
        return self._queue_urls[arn]
