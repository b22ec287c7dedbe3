"""What the node's monitors say is wrong right now, kept beside the book to verify a repair.

The book cannot answer "is the GPU healthy again?": during a repair it keeps the conditions that caused it
(their taints stay until the repair is verified) and ignores healthy signals. So the controller also keeps
the monitors' current word, one entry per active condition (entity, check, code), set by a fault and removed
by its healthy event. A repair is verified when nothing fatal is left on what it repaired.

One-off reports (an XID, an ECC event, a recovery action) stay active until something clears them; a repair
is what clears them, so those seen before the repair finished do not count against it. Conditions the
monitors keep measuring (counters, GPU lost, links) count whenever they are active.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection

import msgspec

from libs.events.catalogue.health import EntityRef, HealthEvent
from services.health.monitors.conditions import RESET_CLEARS
from services.health.remediation import FaultDetected

ONE_OFF_CHECKS = RESET_CLEARS
"""Checks whose conditions are point reports: a repair clears them (the node agent says so after a reset)."""


class LiveCondition(msgspec.Struct, frozen=True, kw_only=True):
    entity: EntityRef
    check: str
    code: str
    fatal: bool
    seen: dt.datetime
    """When the controller took it in (its own clock, so it compares with the repair's times)."""

    def describe(self) -> str:
        return f"{self.entity.device or self.entity.id} {self.check}/{self.code}"


class LiveView(msgspec.Struct, frozen=True, kw_only=True):
    active: tuple[LiveCondition, ...] = ()


def observe(view: LiveView, event: HealthEvent, decided: FaultDetected | None, now: dt.datetime) -> LiveView:
    """The view after ``event``; ``decided`` is the rules' reading of a fault (None for a healthy event)."""
    if event.healthy or decided is None:
        codes = set(event.error_codes)
        kept = tuple(
            c
            for c in view.active
            if not (c.entity.id == event.entity.id and c.check == event.check and (not codes or c.code in codes))
        )
        return view if len(kept) == len(view.active) else LiveView(active=kept)
    fault = decided.fault
    others = tuple(
        c for c in view.active if (c.entity.id, c.check, c.code) != (fault.entity.id, fault.check, fault.code)
    )
    entry = LiveCondition(entity=fault.entity, check=fault.check, code=fault.code, fatal=fault.fatal, seen=now)
    return LiveView(active=(*others, entry))


def blocking(view: LiveView, devices: Collection[str] | None, repaired_at: dt.datetime) -> list[LiveCondition]:
    """Fatal conditions that say the repair did not work: on ``devices`` (None: anywhere on the node), still
    measured, or reported after the repair finished at ``repaired_at``."""
    return [
        c
        for c in view.active
        if c.fatal
        and (devices is None or c.entity.device in devices)
        and (c.check not in ONE_OFF_CHECKS or c.seen >= repaired_at)
    ]
