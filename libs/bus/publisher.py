"""Publishing typed events to JetStream, de-duplicated by their CloudEvents id."""

from __future__ import annotations

import logging

from nats.aio.client import Client
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext
from nats.js.api import PubAck
from opentelemetry.trace import SpanKind

from libs.bus import tracing
from libs.bus.errors import BusError, PayloadTooLarge
from libs.bus.metrics import PUBLISH_DUPLICATES, PUBLISHED_BY
from libs.events import Event, encode, event_subject

log = logging.getLogger(__name__)


HEADROOM = 8192
"""Bodies this far under the limit cannot exceed it with gpudra's headers; only larger ones are summed."""


def check_size(nc: Client, subject: str, headers: dict[str, str], body: bytes) -> None:
    """Refuse before sending: the server would close the connection on an oversized message."""
    if len(body) < nc.max_payload - HEADROOM:
        return
    size = len(body) + sum(len(key) + len(value) + 4 for key, value in headers.items())
    if size > nc.max_payload:
        raise PayloadTooLarge(subject, size, nc.max_payload)


class Publisher:
    def __init__(self, nc: Client, js: JetStreamContext, source: str) -> None:
        self._nc = nc
        self._js = js
        self.source = source

    async def publish(self, event: Event, *, event_id: str | None = None) -> PubAck:
        """Publish and wait for JetStream to store it; pass ``event_id`` to make a retry idempotent."""
        subject = event_subject(event.node, event.domain, event.topic)
        headers, body = encode(event, source=self.source, event_id=event_id)
        ce_type = headers["ce-type"]
        check_size(self._nc, subject, headers, body)
        attrs = tracing.attributes(
            subject, "send", message_id=headers["ce-id"], body_size=len(body), event_type=ce_type
        )
        with tracing.messaging_span(f"send {subject}", SpanKind.PRODUCER, attrs):
            tracing.inject(headers)
            try:
                ack = await self._js.publish(subject, body, headers=headers)
            except NoRespondersError:
                raise BusError(f"no JetStream stream captures {subject}; was the bus bootstrapped?") from None
            except NatsTimeout:
                raise BusError(f"JetStream did not confirm the event on {subject} in time") from None
        PUBLISHED_BY(ce_type).inc()
        if ack.duplicate:
            PUBLISH_DUPLICATES.labels(ce_type).inc()
            log.debug("duplicate publish ignored by JetStream", extra={"event_id": headers["ce-id"]})
        return ack
