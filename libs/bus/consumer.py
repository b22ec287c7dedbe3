"""Durable pull consumers: at-least-once delivery of typed events to a handler, and nothing lost.

An event is acked only after its handler returns. A handler that raises is retried with a growing delay;
an event that cannot be decoded, that a handler rejects as permanent, or that failed ``max_deliver``
times is copied to the dead-letter stream with the reason and its original headers, then terminated.
If even the dead-letter publish fails the event is left unacked, so the server delivers it again.

One fetch loop serves two ways of handling events:

- a ``Handler`` is awaited for each event in turn, and the consumer settles the event from its outcome;
- a ``HandOff`` takes each event and returns at once; whoever holds it then settles it with the public
  ``ack``, ``retry`` or ``reject`` (the remediation controller hands events to per-node lanes this way).

Fetching: when idle the loop waits for one event and returns the moment it arrives (low latency); once events
are flowing it takes them in batches. At most ``in_flight`` events are in hand (fetched, not yet settled).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import cast

import msgspec
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext, api
from nats.js.errors import APIError
from opentelemetry.trace import SpanKind

from libs.bus import tracing
from libs.bus.deadletter import REASON_LIMIT, dead_letter, one_line
from libs.bus.errors import PermanentError
from libs.bus.metrics import CONSUMED, DEADLETTERS_DROPPED, HANDLER_SECONDS
from libs.bus.provenance import relayed_event
from libs.bus.topology import MAX_EVENT_BYTES
from libs.events import Envelope, Event, EventError, decode
from libs.events.subjects import deadletter_subject

log = logging.getLogger(__name__)

Handler = Callable[[Envelope[Event]], Awaitable[None]]
HandOff = Callable[[Envelope[Event], Msg], Awaitable[None]]
"""Takes an event and returns at once; the event is then settled through the consumer's ``ack``/``retry``/
``reject``."""
BUSY_FETCH_SECONDS = 0.005
"""How long a batch fetch waits to fill up while events are flowing."""
STORE_FULL = 10077
"""JetStream: a stream with discard-new limits refused the message (maximum bytes or messages exceeded)."""


class ConsumerSpec(msgspec.Struct, frozen=True, kw_only=True):
    """How one durable consumer reads one stream; the durable name is its identity across restarts."""

    stream: str
    durable: str
    filter_subjects: list[str]
    max_deliver: int = 5
    backoff: tuple[float, ...] = (0.5, 2.0, 10.0, 30.0)
    ack_wait: float = 30.0
    batch: int = 64
    fetch_timeout: float = 1.0
    accept: tuple[type[Event], ...] | None = None
    """Event types this handler wants; other catalogue types on the same subjects are acked and skipped."""

    def delay(self, deliveries: int) -> float:
        return self.backoff[min(deliveries, len(self.backoff)) - 1] if self.backoff else 0.0


def checked(msg: Msg) -> Envelope[Event]:
    """The event in ``msg``; ``EventError`` when it is not one, or when the server relayed it (provenance.py)."""
    refused = relayed_event(msg.headers)
    if refused:
        raise EventError(refused)
    return decode(msg.headers, msg.data)


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


class Consumer:
    def __init__(
        self,
        js: JetStreamContext,
        spec: ConsumerSpec,
        handler: Handler | HandOff,
        *,
        hands_off: bool = False,
        in_flight: int | None = None,
        max_payload: int = MAX_EVENT_BYTES,
        on_failure: Callable[[str], None] | None = None,
    ) -> None:
        """``hands_off``: ``handler`` is a ``HandOff`` (else a ``Handler``). ``in_flight``: events in hand at
        most (default: two batches). ``max_payload``: the server's (``nc.max_payload``); dead letters are cut to
        fit it and the stream. ``on_failure``: told when the consumer stops taking events without being asked
        to (a bug: fatal)."""
        self._js = js
        self._on_failure = on_failure
        self._dead_letter_limit = min(max_payload, MAX_EVENT_BYTES)
        self.spec = spec
        self._handler = handler
        self._hands_off = hands_off
        self._room = Room(max(in_flight or 2 * spec.batch, spec.batch))
        self._task: asyncio.Task[None] | None = None
        self._fetching = False
        self._subscription: JetStreamContext.PullSubscription | None = None
        self._stopping = asyncio.Event()
        # Label look-ups cost a lock and a dict each; done once here, not per event.
        self._counted = {
            outcome: CONSUMED.labels(spec.durable, outcome)
            for outcome in ("acked", "retried", "ignored", "dead_lettered")
        }
        self._handler_seconds = HANDLER_SECONDS.labels(spec.durable)

    async def start(self) -> None:
        spec = self.spec
        config = api.ConsumerConfig(
            durable_name=spec.durable,
            name=spec.durable,
            ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=spec.ack_wait,
            # Unlimited on the server: we count deliveries ourselves, so that the last one can be moved to
            # the dead-letter stream instead of being silently abandoned by the server.
            max_deliver=-1,
            filter_subjects=spec.filter_subjects,
            deliver_policy=api.DeliverPolicy.ALL,
            max_ack_pending=max(1000, spec.batch * 4),
        )
        await self._js.add_consumer(spec.stream, config)
        self._subscription = await self._js.pull_subscribe_bind(durable=spec.durable, stream=spec.stream)
        self._task = asyncio.create_task(self._run(self._subscription), name=f"consumer {spec.durable}")
        self._task.add_done_callback(self._ended)

    def _dead_letter_failed(self, sequence: int, exc: Exception) -> None:
        log.error(
            "dead-letter publish failed; leaving the event for redelivery",
            extra={"consumer": self.spec.durable, "sequence": sequence, "error": repr(exc)},
        )

    def _ended(self, task: asyncio.Task[None]) -> None:
        if self._stopping.is_set() or self._on_failure is None:
            return
        error = task.exception() if not task.cancelled() else None
        reason = f"consumer {self.spec.durable} stopped taking events" + (f": {error!r}" if error else "")
        log.error("%s", reason, extra={"consumer": self.spec.durable})
        self._on_failure(reason)

    async def stop(self) -> None:
        """Stop fetching (a fetch waiting for events is cut short), finish the event being handled, then
        unsubscribe: what is not settled comes again later."""
        self._stopping.set()
        if self._task is not None:
            if self._fetching:
                self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._subscription is not None:
            with contextlib.suppress(Exception):
                await self._subscription.unsubscribe()

    async def _run(self, subscription: JetStreamContext.PullSubscription) -> None:
        idle, failures = True, 0
        while not self._stopping.is_set():
            wanted = 1 if idle else self.spec.batch
            await self._room.take(wanted)
            self._fetching = True
            try:
                timeout = self.spec.fetch_timeout if idle else BUSY_FETCH_SECONDS
                messages = await subscription.fetch(wanted, timeout=timeout)
            except (NatsTimeout, TimeoutError):  # nats-py raises either when a fetch finds nothing
                self._room.release(wanted)
                idle, failures = True, 0
                continue
            except Exception as exc:
                self._room.release(wanted)
                failures += 1
                log.warning("fetch failed; retrying", extra={"consumer": self.spec.durable, "error": repr(exc)})
                await self._pause(min(0.1 * 2**failures, 5.0))
                continue
            finally:
                self._fetching = False
            self._room.release(wanted - len(messages))
            # One event ended the wait: take what follows in a batch; a batch that did not fill: wait again.
            idle, failures = (not idle) and len(messages) < wanted, 0
            for message in messages:
                await self.process(message)

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def process(self, msg: Msg) -> None:
        """One fetched event: checked, then handed off or handled and settled."""
        spec = self.spec
        try:
            envelope = checked(msg)
        except EventError as exc:
            await self.reject(msg, str(exc))
            return
        if spec.accept is not None and not isinstance(envelope.data, spec.accept):
            self._counted["ignored"].inc()
            await self.ack(msg, counted=False)
            return
        if self._hands_off:
            await cast(HandOff, self._handler)(envelope, msg)
            return
        await self._handle(cast(Handler, self._handler), envelope, msg)

    async def _handle(self, handler: Handler, envelope: Envelope[Event], msg: Msg) -> None:
        attrs = tracing.attributes(
            msg.subject,
            "process",
            message_id=envelope.id,
            body_size=len(msg.data),
            consumer=self.spec.durable,
            event_type=envelope.type,
        )
        parent = tracing.extract(msg.headers)
        with tracing.messaging_span(f"process {msg.subject}", SpanKind.CONSUMER, attrs, parent) as span:
            started = time.perf_counter()
            try:
                await handler(envelope)
            except PermanentError as exc:
                tracing.mark_error(span, str(exc))
                await self.reject(msg, f"rejected by handler: {exc}")
                return
            except Exception as exc:
                tracing.mark_error(span, repr(exc))
                await self.retry(msg, envelope, exc)
                return
            finally:
                self._handler_seconds.observe(time.perf_counter() - started)
        await self.ack(msg)

    # --- settling: each event in hand exactly once ---------------------------------------------------------

    async def ack(self, msg: Msg, *, counted: bool = True) -> None:
        """Done with it: the server forgets it."""
        self._room.release()
        await msg.ack()
        if counted:
            self._counted["acked"].inc()

    async def retry(self, msg: Msg, envelope: Envelope[Event], error: Exception) -> None:
        """Failed for now: delivered again after the spec's back-off, or dead-lettered after ``max_deliver``."""
        self._room.release()
        await self._retry_or_give_up(msg, envelope, error)

    async def reject(self, msg: Msg, reason: str) -> None:
        """Never acceptable: copied to the dead letters with ``reason``, then terminated."""
        self._room.release()
        await self._dead_letter(msg, reason)

    async def _retry_or_give_up(self, msg: Msg, envelope: Envelope[Event], exc: Exception) -> None:
        deliveries = msg.metadata.num_delivered
        context = {"consumer": self.spec.durable, "event_id": envelope.id, "event_type": envelope.type}
        if deliveries >= self.spec.max_deliver:
            log.error("handler failed %d times; dead-lettering", deliveries, extra=context, exc_info=exc)
            await self._dead_letter(msg, f"handler failed {deliveries} times; last error: {exc!r}")
            return
        delay = self.spec.delay(deliveries)
        log.warning("handler failed; retrying in %.1fs", delay, extra={**context, "error": repr(exc)}, exc_info=exc)
        await msg.nak(delay=delay)
        self._counted["retried"].inc()

    async def _dead_letter(self, msg: Msg, reason: str) -> None:
        meta = msg.metadata
        stream, sequence = meta.stream, meta.sequence.stream
        origin = {
            "gpudra-dlq-subject": one_line(msg.subject, REASON_LIMIT),
            "gpudra-dlq-stream": stream,
            "gpudra-dlq-sequence": str(sequence),
            "gpudra-dlq-consumer": self.spec.durable,
            "gpudra-dlq-deliveries": str(meta.num_delivered),
            "Nats-Msg-Id": f"dlq:{stream}:{sequence}:{self.spec.durable}",
        }
        copy = dead_letter(msg.data, msg.headers, reason=reason, origin=origin, limit=self._dead_letter_limit)
        try:
            await self._js.publish(deadletter_subject(stream, self.spec.durable), copy.body, headers=copy.headers)
        except APIError as exc:
            if exc.err_code != STORE_FULL:
                self._dead_letter_failed(sequence, exc)
                return
            # This consumer's dead letters are at their limit: keep those, drop this one, visibly.
            await msg.term()
            DEADLETTERS_DROPPED.labels(self.spec.durable).inc()
            log.error(
                "dead letters full; dropped the event (%s)",
                reason,
                extra={"consumer": self.spec.durable, "stream": stream, "sequence": sequence},
            )
            return
        except Exception as exc:
            self._dead_letter_failed(sequence, exc)
            return
        await msg.term()
        self._counted["dead_lettered"].inc()
        log.warning(
            "event dead-lettered%s",
            " (body truncated to fit)" if copy.truncated else "",
            extra={"consumer": self.spec.durable, "stream": stream, "sequence": sequence, "reason": reason},
        )
