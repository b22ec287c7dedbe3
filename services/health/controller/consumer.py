"""The controller's intake: one durable consumer on ``gpudra.v1.*.health.events``, shared by every replica.

It hands each event to its node's lane as it comes (the bus consumer's ``HandOff``), so nodes are decided side
by side while each node's events stay in order, and the events that arrive while a node's batch is in hand are
decided together with one book write. The lanes settle each event through the consumer's ``ack``, ``retry`` and
``reject``, which keep the bus library's guarantees: acked only after the node's book is saved; delivered again
with a growing delay when that failed; dead-lettered with the reason when the event is unreadable, not a
``HealthEvent``, rejected, or failed too often.
"""

from __future__ import annotations

from collections.abc import Callable

from nats.aio.msg import Msg
from nats.js import JetStreamContext

from libs.bus import Consumer, ConsumerSpec
from libs.bus.topology import MAX_EVENT_BYTES, event_stream
from libs.events import Domain, Envelope, Event
from libs.events.catalogue.health import HealthEvent
from libs.events.subjects import node_of_subject
from services.health.controller import metrics

DURABLE = "health-remediation"
IN_FLIGHT = 4096
"""Events in hand at most, across every node's lane."""

Dispatch = Callable[[str, Envelope[Event], Msg], None]


def health_spec(*, batch: int = 1024, ack_wait: float = 60.0) -> ConsumerSpec:
    return ConsumerSpec(
        stream=event_stream(Domain.HEALTH),
        durable=DURABLE,
        filter_subjects=["gpudra.v1.*.health.events"],
        batch=batch,
        ack_wait=ack_wait,
        max_deliver=5,
        backoff=(0.5, 2.0, 10.0, 30.0),
    )


def intake(
    js: JetStreamContext,
    dispatch: Dispatch,
    *,
    max_payload: int = MAX_EVENT_BYTES,
    on_failure: Callable[[str], None] | None = None,
) -> Consumer:
    """The consumer, not started; ``dispatch`` gets each ``HealthEvent`` with its node, to settle later."""

    async def take(envelope: Envelope[Event], msg: Msg) -> None:
        if not isinstance(envelope.data, HealthEvent):
            metrics.EVENTS.labels("dead_lettered").inc()
            await consumer.reject(msg, f"{envelope.type} on {msg.subject} is not a HealthEvent")
            return
        dispatch(node_of_subject(msg.subject), envelope, msg)

    consumer = Consumer(
        js, health_spec(), take, hands_off=True, in_flight=IN_FLIGHT, max_payload=max_payload, on_failure=on_failure
    )
    return consumer
