"""Publishing conditions: a fault when one starts or changes, a healthy event when it clears, nothing else.

Every monitor reports through one Reporter, so the event stream and the pollers agree on what is active (a
GPU lost seen by both is one fault) and a restart finds it again in the ledger. A condition is written to the
ledger before its fault is published (a crash in between re-publishes the same id) and removed only after
its healthy event is published (a crash in between publishes the same healthy id again).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable, Set

import nats.errors

from libs.bus import Bus, BusError
from libs.events import Event
from services.health.monitors.conditions import Condition, event_id, health_event, now
from services.health.monitors.ledger import ActiveCondition, ConditionLedger

log = logging.getLogger(__name__)

RETRY_DELAYS = (0.2, 1.0)
"""Pauses between publish attempts; a NATS reconnect usually fits in them, and a failed report is retried
by the monitor's next pass anyway."""
LOCKS = 64
UNPUBLISHED = "\x00unpublished"
"""The detail ``details()`` gives a ledger entry not yet published by this process: never equal to a real one,
so the next pass reports it again (with its recorded occurrence, hence the same event id)."""


class Reporter:
    def __init__(self, bus: Bus, node: str, ledger: ConditionLedger, clock: Callable[[], dt.datetime] = now) -> None:
        self._bus = bus
        self.node = node
        self._ledger = ledger
        self._clock = clock
        self._published: set[str] = set()
        self._locks = [asyncio.Lock() for _ in range(LOCKS)]

    async def report(self, condition: Condition) -> bool:
        """A condition that holds now; publishes only when it is new, changed, or not yet published here."""
        key = condition.key
        async with self._lock(key):
            entry = self._ledger.get(key)
            if entry is not None and entry.condition.detail == condition.detail:
                if key in self._published:
                    return True
                occurrence = entry.occurrence
            else:
                occurrence = self._clock().isoformat()
                await self._ledger.put(ActiveCondition(condition=condition, occurrence=occurrence))
            return await self._publish_fault(condition, occurrence)

    async def point(self, condition: Condition, at: dt.datetime) -> bool:
        """A one-off report (an XID, an ECC event): always published, active until a GPU reset clears it."""
        occurrence = at.isoformat()
        async with self._lock(condition.key):
            await self._ledger.put(ActiveCondition(condition=condition, occurrence=occurrence))
            return await self._publish_fault(condition, occurrence)

    async def clear(self, key: str) -> bool:
        """The condition no longer holds: a healthy event if it was active, else nothing."""
        async with self._lock(key):
            entry = self._ledger.get(key)
            if entry is None:
                return True
            event = health_event(self.node, entry.condition, healthy=True, detected_at=self._clock())
            ident = event_id(self.node, entry.condition, healthy=True, occurrence=entry.occurrence)
            if not await self._publish(event, ident):
                return False
            await self._ledger.remove(key)
            self._published.discard(key)
            return True

    async def announce(self, event: Event) -> bool:
        """Any other event (MonitorStatusChanged), with the same retries."""
        return await self._publish(event, None)

    def active(self, minor: int | None = None, checks: Set[str] | None = None) -> list[ActiveCondition]:
        return [
            entry
            for entry in self._ledger.entries()
            if (minor is None or entry.condition.minor == minor) and (checks is None or entry.condition.check in checks)
        ]

    def details(self, minor: int, checks: Set[str]) -> dict[str, str]:
        """Active conditions of one GPU and checks as ``compare`` takes them (key -> detail)."""
        return {
            entry.condition.key: entry.condition.detail if entry.condition.key in self._published else UNPUBLISHED
            for entry in self.active(minor, checks)
        }

    async def _publish_fault(self, condition: Condition, occurrence: str) -> bool:
        event = health_event(self.node, condition, healthy=False, detected_at=self._clock())
        if not await self._publish(event, event_id(self.node, condition, healthy=False, occurrence=occurrence)):
            return False
        self._published.add(condition.key)
        log.info(
            "health condition: %s",
            condition.message,
            extra={"node": self.node, "device": condition.entity.device, "check": condition.check},
        )
        return True

    async def _publish(self, event: Event, ident: str | None) -> bool:
        for delay in (*RETRY_DELAYS, None):
            try:
                await self._bus.publish(event, event_id=ident)
            except (BusError, nats.errors.Error) as exc:
                if delay is None:
                    log.error(
                        "could not publish a health event; the next pass retries: %s",
                        exc,
                        extra={"node": self.node, "event": type(event).__name__, "subject": event.ce_subject()},
                    )
                    return False
                await asyncio.sleep(delay)
            else:
                return True
        return False

    def _lock(self, key: str) -> asyncio.Lock:
        """Reports of one condition (the stream's and a poller's GPU lost) never interleave."""
        return self._locks[hash(key) % LOCKS]
