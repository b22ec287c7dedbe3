"""Durable consumers: ack after the handler, retry with backoff, dead letters, resume after restarts."""

from __future__ import annotations

import asyncio
import time

import pytest

from libs.bus import Bus, PermanentError, RetryableError
from libs.bus.topology import DEADLETTER_STREAM
from libs.events import Envelope, Event
from libs.events.catalogue import ClaimPrepared, ClaimUnprepared
from libs.natsserver import EmbeddedNats
from tests.bus.helpers import Inbox, claims_consumer, dead_letters, unprepared


async def test_handler_receives_typed_events_in_order(bus: Bus) -> None:
    inbox = Inbox()
    await bus.consume(claims_consumer("ordered"), inbox.put)
    for uid in ("a", "b", "c"):
        await bus.publish(unprepared(uid))
    await inbox.wait_for(3)
    assert inbox.uids() == ["a", "b", "c"]
    assert all(isinstance(item.data, ClaimUnprepared) for item in inbox.items)
    assert inbox.items[0].source == "/gpudra/node-a/test"


async def test_retryable_error_delivers_the_event_again(bus: Bus) -> None:
    attempts: list[int] = []
    inbox = Inbox()

    async def flaky(envelope: Envelope[Event]) -> None:
        attempts.append(1)
        if len(attempts) == 1:
            raise RetryableError("API server unavailable")
        await inbox.put(envelope)

    await bus.consume(claims_consumer("flaky"), flaky)
    await bus.publish(unprepared("r1"))
    await inbox.wait_for(1)
    assert len(attempts) == 2
    assert inbox.uids() == ["r1"]


async def test_poison_event_lands_in_dead_letters_after_max_deliver(bus: Bus) -> None:
    attempts = 0
    inbox = Inbox()

    async def always_fails(envelope: Envelope[Event]) -> None:
        nonlocal attempts
        if isinstance(envelope.data, ClaimUnprepared) and envelope.data.claim.uid == "poison":
            attempts += 1
            raise RuntimeError("boom")
        await inbox.put(envelope)

    await bus.consume(claims_consumer("poisoned", max_deliver=3), always_fails)
    ack = await bus.publish(unprepared("poison"))
    await bus.publish(unprepared("healthy"))
    [(subject, headers, data)] = await dead_letters(bus, 1)
    await inbox.wait_for(1)
    assert attempts == 3
    assert subject == "gpudra.deadletter.GPUDRA_CLAIMS.poisoned"
    assert headers["gpudra-dlq-reason"] == "handler failed 3 times; last error: RuntimeError('boom')"
    assert headers["gpudra-dlq-sequence"] == str(ack.seq)
    assert headers["gpudra-dlq-subject"] == "gpudra.v1.node-a.claims.unprepared"
    assert headers["ce-type"] == "io.gpudra.ClaimUnprepared.v1"
    assert b'"uid":"poison"' in data
    assert inbox.uids() == ["healthy"]


async def test_permanent_error_dead_letters_at_once(bus: Bus) -> None:
    async def rejects(envelope: Envelope[Event]) -> None:
        raise PermanentError("claim belongs to another driver")

    await bus.consume(claims_consumer("strict"), rejects)
    await bus.publish(unprepared("p1"))
    [(_, headers, _)] = await dead_letters(bus, 1)
    assert headers["gpudra-dlq-reason"] == "rejected by handler: claim belongs to another driver"
    assert headers["gpudra-dlq-deliveries"] == "1"


@pytest.mark.parametrize(
    ("headers", "data", "reason"),
    [
        ({}, b"{}", "not a CloudEvent: missing header(s) ce-specversion, ce-id, ce-source, ce-type"),
        (
            {"ce-specversion": "1.0", "ce-id": "x1", "ce-source": "/t", "ce-type": "io.gpudra.Nope.v1"},
            b"{}",
            "unknown event type 'io.gpudra.Nope.v1' (id x1)",
        ),
        (
            {"ce-specversion": "1.0", "ce-id": "x2", "ce-source": "/t", "ce-type": "io.gpudra.ClaimUnprepared.v1"},
            b"{not json",
            "io.gpudra.ClaimUnprepared.v1 (id x2): data is not JSON",
        ),
        (
            {"ce-specversion": "1.0", "ce-id": "x3", "ce-source": "/t", "ce-type": "io.gpudra.ClaimUnprepared.v1"},
            b'{"node": "node-a", "claim": {"namespace": "d", "name": "n"}}',
            "io.gpudra.ClaimUnprepared.v1 (id x3): Object missing required field `uid` - at `$.claim`",
        ),
    ],
)
async def test_malformed_events_are_dead_lettered_and_consumer_continues(
    bus: Bus, headers: dict[str, str], data: bytes, reason: str
) -> None:
    inbox = Inbox()
    await bus.consume(claims_consumer("tolerant"), inbox.put)
    await bus.js.publish("gpudra.v1.node-a.claims.unprepared", data, headers=headers or None)
    await bus.publish(unprepared("fine"))
    [(_, dead_headers, dead_data)] = await dead_letters(bus, 1)
    await inbox.wait_for(1)
    assert dead_headers["gpudra-dlq-reason"].startswith(reason)
    assert dead_data == data
    assert inbox.uids() == ["fine"]


async def test_accept_skips_other_event_types(bus: Bus) -> None:
    inbox = Inbox()
    await bus.consume(claims_consumer("prepared-only", accept=(ClaimPrepared,)), inbox.put)
    await bus.publish(unprepared("skip-me"))
    await bus.publish(ClaimPrepared(node="node-a", claim=unprepared("take-me").claim, devices=[]))
    await inbox.wait_for(1)
    assert [item.data.ce_subject() for item in inbox.items] == ["take-me"]


async def test_consumer_resumes_after_server_restart(bus: Bus, nats_server: EmbeddedNats) -> None:
    inbox = Inbox()
    await bus.consume(claims_consumer("survivor"), inbox.put)
    await bus.publish(unprepared("before"))
    await inbox.wait_for(1)

    await nats_server.restart()
    await _publish_when_reconnected(bus, unprepared("after"))
    await inbox.wait_for(2, timeout=20)
    assert inbox.uids() == ["before", "after"]


async def test_new_process_with_same_durable_resumes_where_it_left_off(nats_server: EmbeddedNats) -> None:
    from tests.support.nats_fixture import settings_for

    first = await Bus.connect(settings_for(nats_server.url), "worker")
    await first.bootstrap()
    inbox = Inbox()
    await first.consume(claims_consumer("resumable"), inbox.put)
    await first.publish(unprepared("one"))
    await inbox.wait_for(1)
    await first.close()

    second = await Bus.connect(settings_for(nats_server.url), "worker")
    try:
        await second.publish(unprepared("two"))
        later = Inbox()
        await second.consume(claims_consumer("resumable"), later.put)
        await later.wait_for(1)
        assert later.uids() == ["two"]
    finally:
        await second.close()


async def _publish_when_reconnected(bus: Bus, event: ClaimUnprepared, timeout: float = 15.0) -> None:
    """The client reconnects on its own; publishing fails until it has, then must succeed."""
    async with asyncio.timeout(timeout):
        while True:
            try:
                await bus.publish(event, event_id="after-restart")
                return
            except Exception:
                await asyncio.sleep(0.1)


async def test_a_failed_delivery_waits_its_backoff_before_the_next(bus: Bus) -> None:
    """The delay comes from the spec's backoff (a nak with a delay), not from the server's ack wait."""
    attempts: list[float] = []
    inbox = Inbox()

    async def fails_once(envelope: Envelope[Event]) -> None:
        attempts.append(time.monotonic())
        if len(attempts) == 1:
            raise RetryableError("not yet")
        await inbox.put(envelope)

    await bus.consume(claims_consumer("backing-off", backoff=(0.5,), ack_wait=30.0), fails_once)
    await bus.publish(unprepared("late"))
    await inbox.wait_for(1)
    assert 0.45 <= attempts[1] - attempts[0] < 5.0


async def test_an_event_whose_dead_letter_cannot_be_stored_is_kept_for_redelivery(
    bus: Bus, nats_server: EmbeddedNats
) -> None:
    """Losing the copy must not lose the event: it stays unsettled, comes back, and is dead-lettered once the
    dead-letter stream takes it again."""
    config = (await bus.js.stream_info(DEADLETTER_STREAM)).config
    await bus.js.delete_stream(DEADLETTER_STREAM)  # every dead-letter publish fails now
    seen: list[int] = []
    restored = asyncio.Event()

    async def rejects(envelope: Envelope[Event]) -> None:
        seen.append(1)
        if len(seen) == 2:  # the second delivery: the redelivery of an event that was not settled
            await bus.js.add_stream(config)
            restored.set()
        raise PermanentError("never acceptable")

    await bus.consume(claims_consumer("no-dead-letters", ack_wait=1.0), rejects)
    await bus.publish(unprepared("kept"))
    async with asyncio.timeout(10):
        await restored.wait()
    [(_, headers, _)] = await dead_letters(bus, 1)
    assert headers["gpudra-dlq-reason"] == "rejected by handler: never acceptable"
    assert len(seen) == 2
