"""Escalation: what a fault means given what happened before on the same GPU and node.

Rules, first match wins: five remediations on the node in a week → CONTACT_SUPPORT for the node, cleared
only by a person; a fatal XID five times in a day on one GPU → CONTACT_SUPPORT; the same XID repeated on one
GPU (13/31 → RUN_DCGMEUD, 74 → CONTACT_SUPPORT), except that an informational XID also seen on another GPU of
the node points at the application and stays NONE. History is plain data per node, pruned to the longest
window on every call.
"""

from __future__ import annotations

import datetime as dt

import msgspec

from libs.events.catalogue.health import RecommendedAction, TaintEffect
from services.health.catalogue import XID_CHECK, Escalation, Fault


class Occurrence(msgspec.Struct, frozen=True, kw_only=True):
    at: dt.datetime
    entity: str
    """The GPU's id (UUID): "one GPU" survives a renamed device."""
    device: str
    xid: int
    fatal: bool


class History(msgspec.Struct, frozen=True, kw_only=True):
    xids: tuple[Occurrence, ...] = ()
    remediations: tuple[dt.datetime, ...] = ()
    """When a remediation (drain, then GPU reset or reboot) began on the node."""


def escalate(fault: Fault, history: History, at: dt.datetime, rules: Escalation) -> tuple[Fault, History]:
    """``fault`` as the rules see it after ``history``, and the history with it recorded."""
    history = _pruned(history, at, rules)
    if fault.check == XID_CHECK:
        history = msgspec.structs.replace(history, xids=(*history.xids, _occurrence(fault, at)))
    for rule in (_node_remediations, _fatal_repeats, _repeats):
        escalated = rule(fault, history, at, rules)
        if escalated is not None:
            return escalated, history
    return fault, history


def record_remediation(history: History, at: dt.datetime) -> History:
    return msgspec.structs.replace(history, remediations=(*history.remediations, at))


def _pruned(history: History, at: dt.datetime, rules: Escalation) -> History:
    xid_window = max([rules.spread.window, rules.fatal_repeats.window, *(r.window for r in rules.repeats)])
    return History(
        xids=tuple(o for o in history.xids if at - o.at < xid_window),
        remediations=tuple(t for t in history.remediations if at - t < rules.node_remediations.window),
    )


def _node_remediations(fault: Fault, history: History, at: dt.datetime, rules: Escalation) -> Fault | None:
    rule = rules.node_remediations
    count = sum(1 for t in history.remediations if at - t < rule.window)
    if not fault.fatal or rule.action == "NONE" or count < rule.count:
        return None
    reason = f"{count} remediations on this node within {rule.window}: a person must look ({fault.reason})"
    return msgspec.structs.replace(_escalated(fault, rule.action, fault.taint, reason), scope="node", sticky=True)


def _fatal_repeats(fault: Fault, history: History, at: dt.datetime, rules: Escalation) -> Fault | None:
    rule = rules.fatal_repeats
    if fault.check != XID_CHECK or not fault.fatal or rule.action == "NONE":
        return None
    count = sum(1 for o in _on_gpu(history, fault) if o.fatal and at - o.at < rule.window)
    if count < rule.count:
        return None
    taint = fault.taint if fault.taint == "NoExecute" else "NoSchedule"
    return _escalated(fault, rule.action, taint, f"{count} fatal XIDs on {_name(fault)} within {rule.window}")


def _repeats(fault: Fault, history: History, at: dt.datetime, rules: Escalation) -> Fault | None:
    xid = int(fault.code) if fault.check == XID_CHECK else None
    rule = next((r for r in rules.repeats if xid in r.xids), None)
    if xid is None or rule is None or rule.action == "NONE":
        return None
    count = sum(1 for o in _on_gpu(history, fault) if o.xid == xid and at - o.at < rule.window)
    if count < rule.count:
        return None
    spread = rules.spread.window
    others = [o for o in history.xids if o.xid == xid and o.entity != fault.entity.id and at - o.at < spread]
    elsewhere = sorted({o.device or o.entity for o in others})
    if elsewhere and not fault.fatal:
        return msgspec.structs.replace(
            fault, reason=f"XID {xid} also on {', '.join(elsewhere)}: likely the application, not escalated"
        )
    return _escalated(fault, rule.action, rule.taint, f"XID {xid} {count} times on {_name(fault)} within {rule.window}")


def _occurrence(fault: Fault, at: dt.datetime) -> Occurrence:
    return Occurrence(at=at, entity=fault.entity.id, device=fault.entity.device, xid=int(fault.code), fatal=fault.fatal)


def _on_gpu(history: History, fault: Fault) -> list[Occurrence]:
    return [o for o in history.xids if o.entity == fault.entity.id]


def _name(fault: Fault) -> str:
    return fault.entity.device or fault.entity.id


def _escalated(fault: Fault, action: RecommendedAction, taint: TaintEffect | None, reason: str) -> Fault:
    return msgspec.structs.replace(fault, action=action, taint=taint, escalated=True, reason=reason)
