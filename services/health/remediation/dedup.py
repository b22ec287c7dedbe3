"""Deduplication: one decision per (node, entity, check, codes) within the window, however many copies come.

The window runs from the first copy and is not extended by later ones, so a fault that keeps recurring is
decided again each window (and can escalate), while a flood of copies is decided once. A change between
healthy and unhealthy is never a duplicate.
"""

from __future__ import annotations

import datetime as dt

import msgspec

from libs.events.catalogue.health import HealthEvent


class Seen(msgspec.Struct, frozen=True, kw_only=True):
    key: str
    healthy: bool
    at: dt.datetime


class DedupMemory(msgspec.Struct, frozen=True, kw_only=True):
    seen: tuple[Seen, ...] = ()


def event_time(event: HealthEvent, now: dt.datetime) -> dt.datetime:
    """When it happened (so a replay after an outage keeps its spacing), never later than ``now``; a time
    without a zone is taken as UTC."""
    at = event.detected_at or now
    if at.tzinfo is None:
        at = at.replace(tzinfo=dt.UTC)
    return min(at, now)


def dedup_key(event: HealthEvent) -> str:
    return "|".join((event.node, event.entity.id, event.check, ",".join(sorted(event.error_codes))))


def deduplicate(
    memory: DedupMemory, event: HealthEvent, now: dt.datetime, window: dt.timedelta
) -> tuple[DedupMemory, bool]:
    """The memory after ``event`` and whether it is a copy of one already decided."""
    at, key = event_time(event, now), dedup_key(event)
    kept = tuple(s for s in memory.seen if at - s.at < window)
    prior = next((s for s in kept if s.key == key), None)
    if prior is not None and prior.healthy == event.healthy and abs(at - prior.at) < window:
        return DedupMemory(seen=kept), True
    others = tuple(s for s in kept if s.key != key)
    return DedupMemory(seen=(*others, Seen(key=key, healthy=event.healthy, at=at))), False
