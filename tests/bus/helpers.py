"""Small pieces shared by the bus tests."""

from __future__ import annotations

import asyncio

from libs.bus import Bus, ConsumerSpec
from libs.bus.topology import DEADLETTER_STREAM, event_stream
from libs.events import Domain, Envelope, Event
from libs.events.catalogue import ClaimRef, ClaimUnprepared
from libs.events.subjects import domain_filter


def unprepared(uid: str, node: str = "node-a") -> ClaimUnprepared:
    return ClaimUnprepared(node=node, claim=ClaimRef(namespace="default", name=f"claim-{uid}", uid=uid))


def claims_consumer(durable: str, **overrides: object) -> ConsumerSpec:
    defaults: dict[str, object] = {
        "stream": event_stream(Domain.CLAIMS),
        "durable": durable,
        "filter_subjects": [domain_filter(Domain.CLAIMS)],
        "max_deliver": 3,
        "backoff": (0.05,),
        "fetch_timeout": 0.2,
    }
    return ConsumerSpec(**{**defaults, **overrides})  # type: ignore[arg-type]


class Inbox:
    """Collects what a handler received, so a test awaits a count instead of sleeping."""

    def __init__(self) -> None:
        self.items: list[Envelope[Event]] = []
        self._changed = asyncio.Condition()

    async def put(self, envelope: Envelope[Event]) -> None:
        async with self._changed:
            self.items.append(envelope)
            self._changed.notify_all()

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[Envelope[Event]]:
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: len(self.items) >= count)
        return self.items

    def uids(self) -> list[str]:
        return [item.data.claim.uid for item in self.items if isinstance(item.data, ClaimUnprepared)]


async def dead_letters(bus: Bus, count: int, timeout: float = 10.0) -> list[tuple[str, dict[str, str], bytes]]:
    """The first ``count`` dead letters: (subject, headers, data)."""
    subscription = await bus.js.subscribe("gpudra.deadletter.>", stream=DEADLETTER_STREAM, ordered_consumer=True)
    found: list[tuple[str, dict[str, str], bytes]] = []
    try:
        async with asyncio.timeout(timeout):
            while len(found) < count:
                msg = await subscription.next_msg(timeout=timeout)
                found.append((msg.subject, dict(msg.headers or {}), msg.data))
    finally:
        await subscription.unsubscribe()
    return found
