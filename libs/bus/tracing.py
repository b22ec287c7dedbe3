"""W3C trace context in NATS headers, and the messaging span attributes of the OpenTelemetry conventions.

Every publish, request, reply and consume goes through here, so one kubelet call or one fault is one trace
across processes, whichever service handles it.
"""

from __future__ import annotations

from collections.abc import Mapping

from opentelemetry import propagate
from opentelemetry.context import Context
from opentelemetry.trace import Span, Status, StatusCode

from libs.telemetry.tracing import span


def inject(headers: dict[str, str]) -> None:
    propagate.inject(headers)


def extract(headers: Mapping[str, str] | None) -> Context:
    return propagate.extract(dict(headers or {}))


def attributes(
    subject: str,
    operation: str,
    *,
    message_id: str = "",
    body_size: int | None = None,
    consumer: str = "",
    event_type: str = "",
) -> dict[str, str | int]:
    attrs: dict[str, str | int] = {
        "messaging.system": "nats",
        "messaging.destination.name": subject,
        "messaging.operation.type": operation,
        "messaging.operation.name": operation,
    }
    if message_id:
        attrs["messaging.message.id"] = message_id
    if body_size is not None:
        attrs["messaging.message.body.size"] = body_size
    if consumer:
        attrs["messaging.consumer.group.name"] = consumer
    if event_type:
        attrs["cloudevents.event_type"] = event_type
    if message_id and event_type:
        attrs["cloudevents.event_id"] = message_id
    return attrs


messaging_span = span
"""A span with messaging attributes (or only a trace context when nothing records; see libs.telemetry)."""


def mark_error(span: Span, message: str) -> None:
    span.set_status(Status(StatusCode.ERROR, message))
