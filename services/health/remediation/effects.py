"""From a change of the book to the actions that make the cluster match it.

Taints, cordon, node taint and the node's label/annotation are derived from the old and new book, never
written by hand in a transition, so every path (quarantine, recovery, a person's reset, a manual uncordon)
adds and removes exactly what gpudra owns. Transitions become events; work is passed through.
"""

from __future__ import annotations

import re

import msgspec

from libs.events.catalogue.remediation import RemediationState, RemediationStateChanged
from libs.kube import kube_time
from libs.slices.taints import DeviceTaint
from services.health.catalogue import ACTION_RANK
from services.health.remediation.actions import (
    Action,
    Cordon,
    MarkNode,
    Publish,
    SetDeviceTaints,
    TaintNode,
    Uncordon,
    UntaintNode,
)
from services.health.remediation.book import EntityRecord, NodeBook, records
from services.health.remediation.config import RemediationConfig

_LABEL_VALUE = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")
"""A taint value must be a label value; a code that is not one (an odd monitor's) leaves the value out."""

STATE_RANK: dict[RemediationState, int] = {
    "healthy": 0,
    "quarantined": 1,
    "verifying": 2,
    "draining": 3,
    "remediating": 4,
    "drain-failed": 5,
    "remediation-failed": 6,
}
"""Which state the node's label shows when the node and its devices differ: the one most in need of a look."""


class Transition(msgspec.Struct, frozen=True, kw_only=True):
    record: EntityRecord
    """The record after the move (its state, reason, fault and attempt)."""
    previous: RemediationState


class Trail:
    """What one step produced besides the new book: the transitions to publish and the work to start, in
    order. Local to one call of ``step``, so ``step`` stays a pure function."""

    def __init__(self) -> None:
        self.transitions: list[Transition] = []
        self.work: list[Action] = []


def effects(old: NodeBook, new: NodeBook, trail: Trail, config: RemediationConfig) -> list[Action]:
    actions = [
        *_device_taint_changes(old, new, config),
        *_node_changes(old, new, config),
        *_mark_changes(old, new, config),
        *(Publish(node=new.node, event=_event(new.node, t, config)) for t in trail.transitions),
        *trail.work,
    ]
    if config.dry_run:
        return [a if isinstance(a, Publish) else msgspec.structs.replace(a, disposition="dry-run") for a in actions]
    return actions


def device_taints(book: NodeBook, config: RemediationConfig) -> dict[str, tuple[DeviceTaint, ...]]:
    """Per device, the taints its conditions call for (one per key and effect), each with ``timeAdded`` the
    moment its oldest condition began: what a toleration's ``tolerationSeconds`` count from."""
    wanted: dict[str, dict[tuple[str, str], DeviceTaint]] = {}
    for record in records(book):
        for condition in sorted(record.conditions, key=lambda c: c.since):
            fault = condition.fault
            if fault.taint is None or not fault.entity.device:
                continue
            taint = DeviceTaint(
                key=f"{config.taint_domain}/{fault.check}",
                value=fault.code if _LABEL_VALUE.fullmatch(fault.code) else None,
                effect=fault.taint,
                time_added=kube_time(condition.since),
            )
            wanted.setdefault(fault.entity.device, {}).setdefault((taint.key, taint.effect), taint)
    return {device: tuple(sorted(t.values(), key=lambda t: (t.key, t.effect))) for device, t in wanted.items()}


def node_status(book: NodeBook) -> tuple[RemediationState, str]:
    """The node's label value (the worst state of the node and its devices) and annotation (every entity
    not healthy, with its reason)."""
    troubled = [r for r in records(book) if r.state != "healthy"]
    states: list[RemediationState] = ["healthy", *(r.state for r in troubled)]
    worst = max(states, key=STATE_RANK.__getitem__)
    reason = "; ".join(f"{r.entity.device or 'node'}: {r.state} ({r.reason})" for r in troubled)
    return worst, reason


def _device_taint_changes(old: NodeBook, new: NodeBook, config: RemediationConfig) -> list[Action]:
    before, after = device_taints(old, config), device_taints(new, config)
    return [
        SetDeviceTaints(node=new.node, device=device, taints=after.get(device, ()))
        for device in sorted(before.keys() | after.keys())
        if before.get(device) != after.get(device)
    ]


def _node_changes(old: NodeBook, new: NodeBook, config: RemediationConfig) -> list[Action]:
    """Cordon and taint when the node leaves healthy; undo both when it returns, keeping a cordon that was
    there before and not uncordoning a node a person already uncordoned."""
    was, now = old.record.state != "healthy", new.record.state != "healthy"
    if now and not was:
        cordon: list[Action] = [] if new.cordoned_before else [Cordon(node=new.node)]
        return [*cordon, TaintNode(node=new.node, taint=config.node_taint)]
    if was and not now:
        uncordoned_by_hand = old.cordon_seen and new.unschedulable is False
        keep = old.cordoned_before or uncordoned_by_hand
        uncordon: list[Action] = [] if keep else [Uncordon(node=new.node)]
        return [UntaintNode(node=new.node, taint=config.node_taint), *uncordon]
    return []


def _mark_changes(old: NodeBook, new: NodeBook, config: RemediationConfig) -> list[Action]:
    status = node_status(new)
    if status == node_status(old):
        return []
    state, reason = status
    return [
        MarkNode(
            node=new.node,
            labels={config.state_label: None if state == "healthy" else state},
            annotations={config.reason_annotation: reason or None},
        )
    ]


def _event(node: str, transition: Transition, config: RemediationConfig) -> RemediationStateChanged:
    record = transition.record
    return RemediationStateChanged(
        node=node,
        scope=record.scope,
        entity=record.entity,
        previous=transition.previous,
        state=record.state,
        reason=record.reason,
        fault=_main_fault(record),
        attempt=record.attempt,
        dry_run=config.dry_run,
    )


def _main_fault(record: EntityRecord) -> str:
    """The worst fault in force, which the event names."""
    fatal = [c.fault for c in record.conditions if c.fault.fatal]
    return max(fatal, key=lambda f: ACTION_RANK[f.action]).name if fatal else ""
