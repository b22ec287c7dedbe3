"""From a health event to a fault: which catalogue entry applies, and so what action and taint."""

from __future__ import annotations

import msgspec

from libs.events.catalogue.health import EntityRef, HealthEvent, RecommendedAction, TaintEffect
from services.health.catalogue.model import XID_CHECK, Catalogue, FaultSpec, Scope

ACTION_RANK: dict[RecommendedAction, int] = {
    "NONE": 0,
    "COMPONENT_RESET": 1,
    "RESTART_VM": 2,
    "RESTART_BM": 3,
    "RUN_DCGMEUD": 4,
    "RUN_FIELDDIAG": 4,
    "CUSTOM": 4,
    "UNKNOWN": 4,
    "CONTACT_SUPPORT": 5,
    "REPLACE_VM": 5,
}
"""Severity, for picking the worse of two faults: automatic actions in order of disruption, then the ones
that need a person."""


class MalformedHealthEvent(ValueError):
    """An event the catalogue cannot read (an XID event without a number); it belongs in the dead letters."""


class Fault(msgspec.Struct, frozen=True, kw_only=True):
    """The controller's reading of one health event: what is wrong with which entity and what to do."""

    name: str
    """``xid-48``, ``gpu-lost``: the catalogue entry that matched (the taint key and the events use it)."""
    check: str
    code: str = ""
    """The XID number, or the event's first error code for other checks (what a healthy event names)."""
    entity: EntityRef
    action: RecommendedAction
    taint: TaintEffect | None = None
    scope: Scope = "device"
    description: str = ""
    known: bool = True
    """False when the catalogue has no entry for the check: recorded, never acted on."""
    escalated: bool = False
    sticky: bool = False
    """Cleared only by a person, never by a healthy signal (five remediations in a week)."""
    reason: str = ""

    @property
    def fatal(self) -> bool:
        return self.action != "NONE"


def classify(event: HealthEvent, catalogue: Catalogue) -> Fault:
    """The catalogue's verdict on ``event``; the monitor's own ``fatal``/``recommended_action`` are advice
    the catalogue overrides, so an operator's file decides. Unknown XIDs get ``unknown_xid`` (CONTACT_SUPPORT
    by default); an unknown check is recorded and not acted on."""
    if event.check == XID_CHECK:
        return max((_xid_fault(event, code, catalogue) for code in _xids(event)), key=lambda f: ACTION_RANK[f.action])
    code = event.error_codes[0] if event.error_codes else ""
    key = (event.check, code) if (event.check, code) in catalogue.checks else (event.check, "")
    spec = catalogue.checks.get(key)
    if spec is None:
        return Fault(
            name=event.check,
            check=event.check,
            code=code,
            entity=event.entity,
            action="NONE",
            known=False,
            reason=f"check '{event.check}' code '{code}' is not in the fault catalogue: recorded, not acted on",
        )
    name = f"{event.check}-{code}" if key[1] else event.check
    return _fault(event, name, code, spec, f"{name}: {spec.description}".rstrip(": "))


def _xids(event: HealthEvent) -> list[int]:
    try:
        codes = [int(code) for code in event.error_codes]
    except ValueError:
        codes = []
    if not codes:
        raise MalformedHealthEvent(
            f"health event from node {event.node} about {event.entity.kind} {event.entity.id}: check 'xid' needs "
            f"XID numbers in error_codes, got {event.error_codes!r}"
        )
    return codes


def _xid_fault(event: HealthEvent, xid: int, catalogue: Catalogue) -> Fault:
    spec = catalogue.xids.get(xid)
    if spec is None:
        return _fault(event, f"xid-{xid}", str(xid), catalogue.unknown_xid, f"XID {xid} is not in the catalogue")
    return _fault(event, f"xid-{xid}", str(xid), spec, f"XID {xid}: {spec.description}")


def _fault(event: HealthEvent, name: str, code: str, spec: FaultSpec, reason: str) -> Fault:
    return Fault(
        name=name,
        check=event.check,
        code=code,
        entity=event.entity,
        action=spec.action,
        taint=spec.taint,
        scope=spec.scope,
        description=spec.description,
        reason=reason,
    )
