"""Shared pieces of the health-rule tests: a node with four GPUs, faults from the default catalogue, books
driven to a given state by real inputs, and a one-line summary of each action so tables can list them."""

from __future__ import annotations

import datetime as dt

import msgspec

from libs.events.catalogue.health import EntityRef, FaultClassified, HealthEvent, RecommendedAction, TaintEffect
from libs.events.catalogue.remediation import RemediationStateChanged
from services.health.catalogue import Fault, Scope, classify, default_catalogue
from services.health.remediation import (
    Action,
    AnyInput,
    EscalateToNode,
    FaultDetected,
    MarkNode,
    NodeBook,
    NodeObserved,
    Publish,
    RebootNode,
    RemediationConfig,
    ResetDevice,
    SetDeviceTaints,
    Work,
    new_book,
    step,
)
from services.health.remediation import InventoryObserved as Inventory

NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
NODE = "dgx-01"
CONFIG = RemediationConfig()
DEVICES = ("gpu-0", "gpu-1", "gpu-2", "gpu-3")


def gpu(n: int) -> EntityRef:
    return EntityRef(kind="gpu", id=f"GPU-{n:04d}", device=f"gpu-{n}")


def health_event(
    check: str = "xid", codes: tuple[str, ...] = ("48",), device: int = 1, *, healthy: bool = False
) -> HealthEvent:
    return HealthEvent(
        node=NODE,
        check=check,
        component="gpu",
        entity=gpu(device),
        error_codes=list(codes),
        healthy=healthy,
        detected_at=NOW,
    )


def fault(what: str | int, device: int = 1) -> Fault:
    """The default catalogue's fault on ``gpu-<device>`` for an XID number, or ``check/code`` (``check``)."""
    if isinstance(what, int):
        return classify(health_event("xid", (str(what),), device), default_catalogue())
    check, _, code = what.partition("/")
    return classify(health_event(check, (code,) if code else (), device), default_catalogue())


def crafted(action: RecommendedAction, *, scope: Scope = "node", sticky: bool = False) -> Fault:
    """A fault on gpu-1 the default catalogue gives only after escalation (five remediations in a week make
    it sticky), or an informational node fault (NONE, recorded with the ``None`` taint)."""
    taint: TaintEffect = "NoSchedule" if action != "NONE" else "None"
    return msgspec.structs.replace(
        fault("row-remap/failed"), action=action, taint=taint, scope=scope, sticky=sticky, escalated=True
    )


def detected(what: str | int, device: int = 1) -> FaultDetected:
    return FaultDetected(fault=fault(what, device))


def ready(*, unschedulable: bool = False, labels: dict[str, str] | None = None) -> NodeBook:
    """A known node with four GPUs, observed schedulable (or cordoned) with ``labels``."""
    book = new_book(NODE)
    book, _ = step(book, Inventory(devices=DEVICES), NOW, CONFIG)
    book, _ = step(book, NodeObserved(unschedulable=unschedulable, labels=labels or {}), NOW, CONFIG)
    return book


def drive(book: NodeBook, *inputs: AnyInput, config: RemediationConfig = CONFIG) -> tuple[NodeBook, list[Action]]:
    """Feed ``inputs`` in order; the book after all of them and the actions of the last."""
    actions: list[Action] = []
    for item in inputs:
        book, actions = step(book, item, NOW, config)
    return book, actions


def summary(action: Action) -> str:
    """``device healthy→quarantined``, ``taints gpu-1=xid:NoSchedule``, ``EvictPods gpu-1``..."""
    match action:
        case Publish(event=FaultClassified() as verdict):
            return f"verdict {verdict.disposition}"
        case Publish(event=RemediationStateChanged() as change):
            return f"{change.scope} {change.previous}→{change.state}"
        case SetDeviceTaints():
            taints = ",".join(f"{t.key.rsplit('/', 1)[1]}:{t.effect}" for t in action.taints)
            return f"taints {action.device}={taints}"
        case MarkNode():
            return f"mark {next(iter(action.labels.values())) or '-'}"
        case ResetDevice():
            return f"ResetDevice {action.device} #{action.attempt}"
        case RebootNode():
            return f"RebootNode {action.mode} #{action.attempt}"
        case EscalateToNode():
            return f"EscalateToNode {action.fault.action}"
        case Work():
            return f"{type(action).__name__} {action.device or 'node'}"
        case _:
            return type(action).__name__


def summaries(actions: list[Action]) -> list[str]:
    return [summary(a) for a in actions]


TRANSITIONS: dict[str, set[tuple[str, str]]] = {
    "device": {
        ("healthy", "quarantined"),
        ("quarantined", "draining"),
        ("quarantined", "healthy"),
        ("draining", "remediating"),
        ("draining", "drain-failed"),
        ("draining", "healthy"),
        ("draining", "quarantined"),
        ("remediating", "verifying"),
        ("remediating", "remediating"),
        ("remediating", "quarantined"),
        ("remediating", "remediation-failed"),
        ("remediating", "healthy"),
        ("verifying", "healthy"),
        ("verifying", "quarantined"),
        ("verifying", "remediating"),
        ("verifying", "remediation-failed"),
        ("drain-failed", "healthy"),
        ("remediation-failed", "healthy"),
    },
    "node": {
        ("healthy", "quarantined"),
        ("quarantined", "draining"),
        ("quarantined", "healthy"),
        ("draining", "remediating"),
        ("draining", "drain-failed"),
        ("draining", "healthy"),
        ("draining", "quarantined"),
        ("remediating", "verifying"),
        ("remediating", "remediating"),
        ("remediating", "remediation-failed"),
        ("remediating", "healthy"),
        ("verifying", "healthy"),
        ("verifying", "quarantined"),
        ("verifying", "remediating"),
        ("verifying", "remediation-failed"),
        ("drain-failed", "healthy"),
        ("remediation-failed", "healthy"),
    },
}
"""Every transition of each scope, as docs/health.md lists them; the transition tables must cover each."""


def transitions(actions: list[Action], scope: str) -> set[tuple[str, str]]:
    return {
        (a.event.previous, a.event.state)
        for a in actions
        if isinstance(a, Publish) and isinstance(a.event, RemediationStateChanged) and a.event.scope == scope
    }
