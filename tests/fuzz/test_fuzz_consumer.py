"""The consumer loop on a real server: garbage published on a claims subject ends acked (handed to the handler)
or dead-lettered, never pending or lost; the loop keeps running, and a valid event after the garbage arrives."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from libs.bus import Bus
from libs.bus.provenance import RELAY_HEADERS
from libs.bus.topology import DEADLETTER_STREAM
from libs.events import EVENTS, encode
from tests.bus.helpers import Inbox, claims_consumer, unprepared
from tests.fuzz.strategies import json_values, of_type

DURABLE = "fuzzed"
POLL_SECONDS = 0.02

events = st.one_of(*(of_type(cls) for cls in EVENTS.values()))
subjects = st.builds(
    "gpudra.v1.{}.claims.{}".format,
    st.sampled_from(["node-a", "node-b", "_cluster", "x_y"]),
    st.sampled_from(["prepared", "unprepared", "failed", "junk"]),
)
header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40) | st.text(
    st.characters(exclude_categories=["Cs", "Cc"]), max_size=20
)
"""What a NATS header value can carry: one line (control characters would end it), any script."""
header_names = st.sampled_from(["ce-specversion", "ce-id", "ce-type", "ce-time", "traceparent", *RELAY_HEADERS]) | (
    st.text("abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=12)
)
"""CloudEvents and trace headers, the headers of a relayed message, and made-up ones (no other ``Nats-*``
header: those instruct JetStream, e.g. ``Nats-Expected-Stream``, and the publish itself would be refused)."""


@st.composite
def messages(draw: st.DrawFn) -> tuple[str, dict[str, str], bytes]:
    """A real event's headers with some replaced or added, and its body or any other."""
    headers, body = encode(draw(events), source="/gpudra/node-a/fuzz")
    del headers["Nats-Msg-Id"]  # one id twice within the de-duplication window would not be stored at all
    headers |= draw(st.dictionaries(header_names, header_text, max_size=3))
    bodies = st.just(body) | st.binary(max_size=64) | json_values.map(msgspec.json.encode)
    return draw(subjects), draw(st.sampled_from([headers, {}])), draw(bodies)


class Fuzzed:
    """The bus, a durable consumer handing every event to ``inbox``, and what was published to it."""

    def __init__(self, bus: Bus, inbox: Inbox) -> None:
        self.bus = bus
        self.inbox = inbox
        self.published = 0
        self._sentinels = itertools.count()

    async def publish(self, subject: str, headers: dict[str, str], body: bytes) -> None:
        ack = await self.bus.js.publish(subject, body, headers=headers or None)
        self.published += not ack.duplicate

    async def sentinel(self) -> None:
        """A valid event after the garbage: once the handler has it, everything before it was settled."""
        uid = f"sentinel-{next(self._sentinels)}"
        await self.bus.publish(unprepared(uid))
        self.published += 1

        async def arrived() -> bool:
            return uid in self.inbox.uids()

        assert await until(arrived, timeout=10.0), f"the valid event {uid} never reached the handler"

    async def counts(self) -> dict[str, int]:
        info = await self.bus.js.consumer_info(claims_consumer(DURABLE).stream, DURABLE)
        dead = (await self.bus.js.stream_info(DEADLETTER_STREAM)).state.messages
        return {
            "settled": len(self.inbox.items) + dead,
            "published": self.published,
            "pending": info.num_pending or 0,
            "unacked": info.num_ack_pending or 0,
        }


async def until(condition: Callable[[], Awaitable[bool]], timeout: float) -> bool:
    """Whether ``condition`` came true within ``timeout`` seconds; polled, as server-side counts announce nothing."""
    for _ in range(int(timeout / POLL_SECONDS)):
        if await condition():
            return True
        await asyncio.sleep(POLL_SECONDS)
    return await condition()


@pytest.fixture
async def fuzzed(bus: Bus) -> Fuzzed:
    inbox = Inbox()
    await bus.consume(claims_consumer(DURABLE), inbox.put)
    return Fuzzed(bus, inbox)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=st.lists(messages(), min_size=1, max_size=6))
async def test_garbage_is_acked_or_dead_lettered_and_the_loop_goes_on(
    fuzzed: Fuzzed, batch: list[tuple[str, dict[str, str], bytes]]
) -> None:
    """One server and one durable for all examples (the fixture is the test's): every example adds a batch."""
    for subject, headers, body in batch:
        await fuzzed.publish(subject, headers, body)
    await fuzzed.sentinel()

    async def settled() -> bool:
        counts = await fuzzed.counts()
        return counts["settled"] == counts["published"] and counts["unacked"] == counts["pending"] == 0

    assert await until(settled, timeout=5.0), f"not every message was acked or dead-lettered: {await fuzzed.counts()}"
    assert not fuzzed.bus.link.failure
