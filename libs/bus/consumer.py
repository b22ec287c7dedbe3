"""Durable pull consumers: at-least-once delivery of typed events to a handler, and nothing lost.

An event is acked only after its handler returns. A handler that raises is retried with a growing delay;
an event that cannot be decoded, that a handler rejects as permanent, or that failed ``max_deliver``
times is copied to the dead-letter stream with the reason and its original headers, then terminated.
If even the dead-letter publish fails the event is left unacked, so the server delivers it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

import msgspec
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext, api
from opentelemetry.trace import SpanKind

from libs.bus import tracing
from libs.bus.errors import PermanentError
from libs.bus.metrics import CONSUMED, HANDLER_SECONDS
from libs.bus.provenance import relayed_event
from libs.events import Envelope, Event, EventError, decode
from libs.events.subjects import deadletter_subject

log = logging.getLogger(__name__)

Handler = Callable[[Envelope[Event]], Awaitable[None]]
_HEADER_LIMIT = 1024


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


def _header_value(text: str) -> str:
    return " ".join(text.split())[:_HEADER_LIMIT]


class Consumer:
    def __init__(self, js: JetStreamContext, spec: ConsumerSpec, handler: Handler) -> None:
        self._js = js
        self.spec = spec
        self._handler = handler
        self._task: asyncio.Task[None] | None = None
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

    async def stop(self) -> None:
        """Finish the event in hand, then unsubscribe: unacked fetched events are redelivered later."""
        self._stopping.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._subscription is not None:
            with contextlib.suppress(Exception):
                await self._subscription.unsubscribe()

    async def _run(self, subscription: JetStreamContext.PullSubscription) -> None:
        failures = 0
        while not self._stopping.is_set():
            try:
                messages = await subscription.fetch(self.spec.batch, timeout=self.spec.fetch_timeout)
            except NatsTimeout:
                failures = 0
                continue
            except Exception as exc:
                failures += 1
                log.warning("fetch failed; retrying", extra={"consumer": self.spec.durable, "error": repr(exc)})
                await self._pause(min(0.1 * 2**failures, 5.0))
                continue
            failures = 0
            for message in messages:
                await self.process(message)

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def process(self, msg: Msg) -> None:
        spec = self.spec
        try:
            envelope = checked(msg)
        except EventError as exc:
            await self._dead_letter(msg, str(exc))
            return
        if spec.accept is not None and not isinstance(envelope.data, spec.accept):
            self._counted["ignored"].inc()
            await msg.ack()
            return
        attrs = tracing.attributes(
            msg.subject,
            "process",
            message_id=envelope.id,
            body_size=len(msg.data),
            consumer=spec.durable,
            event_type=envelope.type,
        )
        parent = tracing.extract(msg.headers)
        with tracing.messaging_span(f"process {msg.subject}", SpanKind.CONSUMER, attrs, parent) as span:
            started = time.perf_counter()
            try:
                await self._handler(envelope)
            except PermanentError as exc:
                tracing.mark_error(span, str(exc))
                await self._dead_letter(msg, f"rejected by handler: {exc}")
                return
            except Exception as exc:
                tracing.mark_error(span, repr(exc))
                await self._retry_or_give_up(msg, envelope, exc)
                return
            finally:
                self._handler_seconds.observe(time.perf_counter() - started)
        await msg.ack()
        self._counted["acked"].inc()

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
        headers = dict(msg.headers or {})
        headers.update(
            {
                "gpudra-dlq-reason": _header_value(reason),
                "gpudra-dlq-subject": msg.subject,
                "gpudra-dlq-stream": stream,
                "gpudra-dlq-sequence": str(sequence),
                "gpudra-dlq-consumer": self.spec.durable,
                "gpudra-dlq-deliveries": str(meta.num_delivered),
                "Nats-Msg-Id": f"dlq:{stream}:{sequence}:{self.spec.durable}",
            }
        )
        try:
            await self._js.publish(deadletter_subject(stream, self.spec.durable), msg.data, headers=headers)
        except Exception as exc:
            log.error(
                "dead-letter publish failed; leaving the event for redelivery",
                extra={"consumer": self.spec.durable, "sequence": sequence, "error": repr(exc)},
            )
            return
        await msg.term()
        self._counted["dead_lettered"].inc()
        log.warning(
            "event dead-lettered",
            extra={"consumer": self.spec.durable, "stream": stream, "sequence": sequence, "reason": reason},
        )
