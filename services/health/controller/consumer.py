"""The controller's intake: one durable consumer on ``gpudra.v1.*.health.events``, shared by every replica.

It keeps the bus library's guarantees (acked only after the node's book is saved; redelivered with a growing
delay when that failed; dead-lettered with the reason when the event is unreadable, rejected, or failed too
often) but not its one-event-at-a-time loop. Events are handed to their node's lane as they come, so nodes
are decided side by side while each node's events stay in order, and the events that arrive while a node's
batch is in hand are decided together with one book write.

Fetching: when idle it waits for one event and returns the moment it arrives (low latency); once events are
flowing it takes them in batches. At most ``in_flight`` events are in hand at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext

from libs.bus import Consumer, ConsumerSpec
from libs.bus.consumer import checked
from libs.bus.topology import MAX_EVENT_BYTES, event_stream
from libs.events import Domain, Envelope, Event, EventError
from libs.events.catalogue.health import HealthEvent
from libs.events.subjects import node_from_token
from services.health.controller import metrics

log = logging.getLogger(__name__)

DURABLE = "health-remediation"
BUSY_FETCH_SECONDS = 0.005
"""How long a batch fetch waits to fill up while events are flowing."""

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
        accept=(HealthEvent,),
    )


class Room:
    """How many more events may be taken in hand (a semaphore counted in bulk)."""

    def __init__(self, size: int) -> None:
        self._free = size
        self._freed = asyncio.Event()

    async def take(self, count: int) -> None:
        while self._free < count:
            self._freed.clear()
            await self._freed.wait()
        self._free -= count

    def release(self, count: int = 1) -> None:
        self._free += count
        self._freed.set()


async def _unused(_: Envelope[Event]) -> None:
    raise RuntimeError("the health consumer hands events to lanes")


class HealthConsumer(Consumer):
    def __init__(
        self,
        js: JetStreamContext,
        spec: ConsumerSpec,
        dispatch: Dispatch,
        *,
        in_flight: int = 4096,
        max_payload: int = MAX_EVENT_BYTES,
        on_failure: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__(js, spec, _unused, max_payload=max_payload, on_failure=on_failure)
        self._dispatch = dispatch
        self._room = Room(in_flight)

    async def ack(self, msg: Msg) -> None:
        self._room.release()
        await msg.ack()
        self._counted["acked"].inc()

    async def reject(self, msg: Msg, reason: str) -> None:
        self._room.release()
        metrics.EVENTS.labels("dead_lettered").inc()
        await self._dead_letter(msg, reason)

    async def retry(self, msg: Msg, envelope: Envelope[Event], error: Exception) -> None:
        self._room.release()
        metrics.EVENTS.labels("retried").inc()
        await self._retry_or_give_up(msg, envelope, error)

    async def stop(self) -> None:
        """Stops fetching at once (the base class waits out a fetch, up to a second): events in hand are the
        lanes', and whatever is not acked comes again."""
        self._stopping.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await super().stop()

    async def _run(self, subscription: JetStreamContext.PullSubscription) -> None:
        idle, failures = True, 0
        while not self._stopping.is_set():
            wanted = 1 if idle else self.spec.batch
            await self._reserve(wanted)
            try:
                messages = await subscription.fetch(
                    wanted, timeout=self.spec.fetch_timeout if idle else BUSY_FETCH_SECONDS
                )
            except (NatsTimeout, TimeoutError):  # nats-py raises either when a fetch finds nothing
                self._give_back(wanted)
                idle, failures = True, 0
                continue
            except Exception as exc:
                self._give_back(wanted)
                failures += 1
                log.warning("fetch failed; retrying", extra={"consumer": self.spec.durable, "error": repr(exc)})
                await self._pause(min(0.1 * 2**failures, 5.0))
                continue
            self._give_back(wanted - len(messages))
            # One event ended the wait: take what follows in a batch; a batch that did not fill: wait again.
            idle, failures = (not idle) and len(messages) < wanted, 0
            for message in messages:
                await self._take(message)

    async def _reserve(self, count: int) -> None:
        await self._room.take(count)

    def _give_back(self, count: int) -> None:
        self._room.release(count)

    async def _take(self, msg: Msg) -> None:
        try:
            envelope = checked(msg)
        except EventError as exc:
            log.warning("unreadable health event: %s", exc, extra={"subject": msg.subject})
            await self.reject(msg, str(exc))
            return
        if not isinstance(envelope.data, HealthEvent):
            await self.reject(msg, f"{envelope.type} on {msg.subject} is not a HealthEvent")
            return
        node = node_from_token(msg.subject.split(".")[2])
        self._dispatch(node, envelope, msg)
