"""The remediation state machine: ``step(book, input, now, config) -> (book, actions)``.

Per device and per node: healthy → quarantined → draining → remediating → verifying → healthy, with
drain-failed and remediation-failed waiting for a person. A device is repaired by a partial drain and a
GPU reset, the node by a full drain and a reboot; a reboot takes over the repair of the node's devices, and
a device whose resets run out falls back to one. A fault whose action needs a person stops at quarantined.

Pure: the clock is a parameter, the result is a new book and a list of actions (see ``actions``), and the
same inputs always give the same result. Inputs that make no sense in the current state (a stale outcome,
a reset of a healthy device) change nothing.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal, assert_never

import msgspec

from libs.events.catalogue.health import Disposition, FaultClassified
from libs.events.catalogue.remediation import RemediationState
from services.health.catalogue import AUTOMATIC_ACTIONS, Fault
from services.health.remediation.actions import (
    Action,
    CancelDrain,
    EscalateToNode,
    EvictPods,
    Publish,
    RebootNode,
    ResetDevice,
    VerifyHealth,
    Work,
)
from services.health.remediation.book import Condition, EntityRecord, NodeBook, put, record_of, records
from services.health.remediation.config import RemediationConfig
from services.health.remediation.effects import Trail, Transition, effects
from services.health.remediation.escalation import record_remediation
from services.health.remediation.inputs import (
    AnyInput,
    AnyOutcome,
    DrainFailed,
    DrainSucceeded,
    FaultDetected,
    HealthyObserved,
    InventoryObserved,
    NodeObserved,
    Outcome,
    PersonReset,
    RemediationFailed,
    RemediationSucceeded,
    VerificationFailed,
    VerificationPassed,
)

Plan = Literal["none", "gpu-reset", "restart-vm", "restart-bm", "person"]
StateInput = HealthyObserved | AnyOutcome | NodeObserved | InventoryObserved | PersonReset

_EXPECTED: dict[type[Outcome], RemediationState] = {
    DrainSucceeded: "draining",
    DrainFailed: "draining",
    RemediationSucceeded: "remediating",
    RemediationFailed: "remediating",
    VerificationPassed: "verifying",
    VerificationFailed: "verifying",
}
_REBOOTING: frozenset[RemediationState] = frozenset(
    {"draining", "remediating", "verifying", "drain-failed", "remediation-failed"}
)
"""Node states in which the node's reboot owns the repair of its devices (or will, once a person acts)."""
_CLEARABLE: frozenset[RemediationState] = frozenset({"healthy", "quarantined", "draining"})
_IN_REPAIR: frozenset[RemediationState] = frozenset({"quarantined", "draining", "remediating", "verifying"})


def step(book: NodeBook, event: AnyInput, now: dt.datetime, config: RemediationConfig) -> tuple[NodeBook, list[Action]]:
    """The book after ``event`` and the actions that bring the cluster in line with it."""
    if isinstance(event, FaultDetected):
        return _fault_detected(book, event, now, config)
    trail = Trail()
    new = _apply(book, event, now, config, trail)
    return new, effects(book, new, trail, config)


def record_only_reason(book: NodeBook, fault: Fault, config: RemediationConfig) -> str:
    """Why ``fault`` must only be recorded, never acted on; empty when it may be acted on."""
    if not fault.known:
        return fault.reason
    if book.inventory is None:
        return f"node {book.node} has no known device inventory: not acted on"
    if fault.scope == "device" and fault.entity.device not in book.inventory:
        return f"device '{fault.entity.device}' is not in node {book.node}'s inventory: not acted on"
    if book.opted_out:
        return f"node {book.node} opted out (label {config.opt_out_label}={config.opt_out_value}): recorded only"
    return ""


def needs_admission(book: NodeBook, fault: Fault, config: RemediationConfig) -> bool:
    """Whether ``fault`` would start a new quarantine, which the circuit breaker must admit first."""
    if record_only_reason(book, fault, config) or not fault.fatal:
        return False
    record = record_of(book, "" if fault.scope == "node" else fault.entity.device)
    return record is None or record.state == "healthy"


def plan_of(record: EntityRecord) -> Plan:
    """The repair the record's conditions call for; any condition that needs a person wins."""
    actions = {c.fault.action for c in record.conditions if c.fault.fatal}
    if not actions:
        return "none"
    if actions - AUTOMATIC_ACTIONS:
        return "person"
    if "RESTART_BM" in actions:
        return "restart-bm"
    return "restart-vm" if "RESTART_VM" in actions else "gpu-reset"


def _fault_detected(
    book: NodeBook, event: FaultDetected, now: dt.datetime, config: RemediationConfig
) -> tuple[NodeBook, list[Action]]:
    """Record-only faults change nothing; held ones report what would have happened and change nothing."""
    if reason := record_only_reason(book, event.fault, config):
        return book, [_verdict(book, event, "recorded", reason)]
    trail = Trail()
    new = _add_fault(book, event.fault, now, trail)
    actions = effects(book, new, trail, config)
    if event.held:
        held = [msgspec.structs.replace(a, disposition="held") for a in actions]
        return book, [_verdict(book, event, "held", f"circuit breaker open: {event.fault.reason}"), *held]
    disposition: Disposition = "dry-run" if config.dry_run else "acted"
    return new, [_verdict(book, event, disposition, event.fault.reason), *actions]


def _verdict(book: NodeBook, event: FaultDetected, disposition: Disposition, reason: str) -> Publish:
    fault = event.fault
    return Publish(
        node=book.node,
        event=FaultClassified(
            node=book.node,
            entity=fault.entity,
            fault=fault.name,
            action=fault.action,
            taint_effect=fault.taint,
            escalated=fault.escalated,
            reason=reason,
            source_event_ids=list(event.source_event_ids),
            disposition=disposition,
        ),
    )


def _apply(book: NodeBook, event: StateInput, now: dt.datetime, config: RemediationConfig, trail: Trail) -> NodeBook:
    match event:
        case HealthyObserved():
            return _healthy(book, event, now, trail)
        case Outcome():
            return _outcome(book, event, now, config, trail)
        case NodeObserved():
            return _node_observed(book, event, now, config, trail)
        case InventoryObserved():
            return msgspec.structs.replace(book, inventory=event.devices)
        case PersonReset():
            note = f": {event.note}" if event.note else ""
            return _release(book, event.device, f"reset by {event.by}{note}", now, trail)
        case _:
            assert_never(event)


# --- faults ---------------------------------------------------------------------------------------------


def _add_fault(book: NodeBook, fault: Fault, now: dt.datetime, trail: Trail) -> NodeBook:
    """Record the condition; a fatal fault on a healthy entity starts its quarantine."""
    key = "" if fault.scope == "node" else fault.entity.device
    record = record_of(book, key) or EntityRecord(scope="device", entity=fault.entity)
    record = _with_condition(record, fault, now)
    if record.state != "healthy" or not fault.fatal:
        return put(book, record)
    record = _move(record, "quarantined", fault.reason or fault.name, now, trail, attempt=0)
    if record.scope == "device":
        return put(book, _start_device(book, record, now, trail))
    cordoned = book.unschedulable is True
    book = msgspec.structs.replace(book, cordoned_before=cordoned, cordon_seen=cordoned)
    return _start_node(put(book, record), now, trail)


def _with_condition(record: EntityRecord, fault: Fault, now: dt.datetime) -> EntityRecord:
    """Add ``fault``, replacing a condition for the same entity, check and code (which keeps its start)."""
    same = next((c for c in record.conditions if _same_condition(c.fault, fault)), None)
    others = tuple(c for c in record.conditions if c is not same)
    condition = Condition(fault=fault, since=same.since if same else now)
    return msgspec.structs.replace(record, conditions=(*others, condition))


def _same_condition(a: Fault, b: Fault) -> bool:
    return (a.entity.id, a.check, a.code) == (b.entity.id, b.check, b.code)


def _start_device(book: NodeBook, record: EntityRecord, now: dt.datetime, trail: Trail) -> EntityRecord:
    """A quarantined device that a GPU reset can repair starts its partial drain, unless the node's reboot
    owns the repair; one that needs a person stays quarantined."""
    if record.state != "quarantined" or plan_of(record) != "gpu-reset":
        return record
    if book.record.state in _REBOOTING:
        return msgspec.structs.replace(record, awaiting_node=True)
    reason = f"evicting the pods using {record.entity.device} before a GPU reset"
    return _drain(book.node, record, reason, now, trail)


def _start_node(book: NodeBook, now: dt.datetime, trail: Trail) -> NodeBook:
    """A quarantined node that a reboot can repair takes over its devices' repairs and drains every pod."""
    record, plan = book.record, plan_of(book.record)
    if record.state != "quarantined" or plan not in ("restart-bm", "restart-vm"):
        return book
    for device in book.devices:
        if device.state in _IN_REPAIR and plan_of(device) == "gpu-reset" and not device.awaiting_node:
            book = put(book, _hand_to_node(book.node, device, now, trail))
    return put(book, _drain(book.node, record, "draining every pod before a reboot", now, trail))


def _hand_to_node(node: str, record: EntityRecord, now: dt.datetime, trail: Trail) -> EntityRecord:
    if record.state == "draining":
        trail.work.append(CancelDrain(node=node, device=record.key, cycle=record.cycle))
    if record.state != "quarantined":
        record = _move(record, "quarantined", "the node's reboot takes over this GPU's repair", now, trail)
    return msgspec.structs.replace(record, awaiting_node=True)


def _drain(node: str, record: EntityRecord, reason: str, now: dt.datetime, trail: Trail) -> EntityRecord:
    record = _move(record, "draining", reason, now, trail, cycle=record.cycle + 1, attempt=0)
    trail.work.append(EvictPods(node=node, device=record.key, cycle=record.cycle))
    return record


# --- outcomes of work -----------------------------------------------------------------------------------


def _outcome(book: NodeBook, event: AnyOutcome, now: dt.datetime, config: RemediationConfig, trail: Trail) -> NodeBook:
    record = record_of(book, event.device)
    if record is None or record.awaiting_node or record.cycle != event.cycle:
        return book
    if record.state != _EXPECTED[type(event)]:
        return book
    detail = f": {event.detail}" if event.detail else ""
    match event:
        case DrainSucceeded():
            return _drained(book, record, now, trail)
        case DrainFailed():
            return put(book, _move(record, "drain-failed", f"drain failed{detail}; a person must act", now, trail))
        case RemediationSucceeded():
            record = _move(record, "verifying", f"{_repair_name(record)} done; verifying", now, trail)
            trail.work.append(VerifyHealth(node=book.node, device=record.key, cycle=record.cycle))
            return put(book, record)
        case VerificationPassed():
            return _verified(book, record, now, trail)
        case RemediationFailed() | VerificationFailed():
            why = f"attempt {record.attempt} failed{detail}"
            return _failed_attempt(book, record, why, now, trail, config=config)
        case _:
            assert_never(event)


def _drained(book: NodeBook, record: EntityRecord, now: dt.datetime, trail: Trail) -> NodeBook:
    """Drained: repair, unless a fault that needs a person arrived meanwhile."""
    if plan_of(record) in ("none", "person"):
        return put(book, _settle(record, "drained; a fault on it needs a person", now, trail))
    record = _move(record, "remediating", f"drained; starting {_repair_name(record)}", now, trail, attempt=1)
    trail.work.append(_repair(book.node, record))
    return msgspec.structs.replace(put(book, record), history=record_remediation(book.history, now))


def _failed_attempt(
    book: NodeBook, record: EntityRecord, why: str, now: dt.datetime, trail: Trail, *, config: RemediationConfig
) -> NodeBook:
    """Try again up to the cap; then a device falls back to a node reboot, or the record needs a person."""
    if record.attempt < config.max_attempts:
        record = _move(record, "remediating", f"{why}; trying again", now, trail, attempt=record.attempt + 1)
        trail.work.append(_repair(book.node, record))
        return put(book, record)
    if record.scope == "device" and config.reset_falls_back_to_reboot:
        reason = f"GPU reset failed {record.attempt} times ({why}); falling back to a node reboot"
        record = _move(record, "quarantined", reason, now, trail, awaiting_node=True)
        trail.work.append(EscalateToNode(node=book.node, fault=_fallback_fault(record, reason)))
        return put(book, record)
    reason = f"gave up after {record.attempt} attempts ({why}); a person must act"
    return put(book, _move(record, "remediation-failed", reason, now, trail))


def _fallback_fault(record: EntityRecord, reason: str) -> Fault:
    return Fault(
        name="gpu-reset-failed",
        check="gpu-reset-failed",
        entity=record.entity,
        action="RESTART_BM",
        scope="node",
        reason=reason,
    )


def _verified(book: NodeBook, record: EntityRecord, now: dt.datetime, trail: Trail) -> NodeBook:
    """Verified: the repaired conditions clear; a reboot also repaired the devices it took over."""
    why = f"verified healthy after {_repair_name(record)}"
    book = put(book, _settle(_without_repaired(record), why, now, trail))
    if record.scope == "node":
        book = _hand_back_devices(book, now, trail, rebooted=True)
    return book


def _repair(node: str, record: EntityRecord) -> Work:
    if record.scope == "device":
        return ResetDevice(node=node, device=record.key, cycle=record.cycle, attempt=record.attempt)
    mode: Literal["bare-metal", "vm"] = "vm" if plan_of(record) == "restart-vm" else "bare-metal"
    return RebootNode(node=node, cycle=record.cycle, attempt=record.attempt, mode=mode)


def _repair_name(record: EntityRecord) -> str:
    return "GPU reset" if record.scope == "device" else "reboot"


# --- recovery, people and the Node ----------------------------------------------------------------------


def _healthy(book: NodeBook, event: HealthyObserved, now: dt.datetime, trail: Trail) -> NodeBook:
    """A healthy signal clears the (non-sticky) conditions it answers, and a record waiting in quarantine or
    draining with nothing fatal left returns to service. A repair under way keeps its taints until it is
    verified, and a failed one until a person looks, so their records ignore the signal."""
    for key in [r.key for r in records(book)]:
        record = record_of(book, key)
        if record is None or record.state not in _CLEARABLE:
            continue
        kept = tuple(c for c in record.conditions if c.fault.sticky or not _answers(event, c.fault))
        if kept == record.conditions:
            continue
        if record.state in ("quarantined", "draining") and not any(c.fault.fatal for c in kept):
            book = _release(book, key, f"{event.check} healthy again", now, trail, keep=kept)
        else:
            book = put(book, msgspec.structs.replace(record, conditions=kept))
    return book


def _answers(event: HealthyObserved, fault: Fault) -> bool:
    same_code = not event.codes or fault.code in event.codes
    return fault.entity.id == event.entity.id and fault.check == event.check and same_code


def _node_observed(
    book: NodeBook, event: NodeObserved, now: dt.datetime, config: RemediationConfig, trail: Trail
) -> NodeBook:
    """Track the opt-out label and the cordon; an uncordon by hand while quarantined cancels the remediation."""
    opted_out = event.labels.get(config.opt_out_label) == config.opt_out_value
    book = msgspec.structs.replace(book, opted_out=opted_out, unschedulable=event.unschedulable)
    if book.record.state == "healthy":
        return book
    if event.unschedulable:
        return msgspec.structs.replace(book, cordon_seen=True)
    if book.cordon_seen:
        return _release(book, "", "uncordoned by hand: remediation cancelled", now, trail)
    return book


def _release(
    book: NodeBook, key: str, reason: str, now: dt.datetime, trail: Trail, *, keep: tuple[Condition, ...] = ()
) -> NodeBook:
    """Back to service: stop work under way, clear the record's conditions but ``keep`` (a person's word
    clears sticky ones too), and give a node's devices their own repairs back."""
    record = record_of(book, key)
    if record is None or (record.state == "healthy" and not record.conditions):
        return book
    if record.state == "draining":
        trail.work.append(CancelDrain(node=book.node, device=key, cycle=record.cycle))
    was_healthy = record.state == "healthy"
    record = msgspec.structs.replace(record, conditions=keep, awaiting_node=False)
    if not was_healthy:
        record = _move(record, "healthy", reason, now, trail)
    book = put(book, record)
    return _hand_back_devices(book, now, trail, rebooted=False) if not key and not was_healthy else book


def _hand_back_devices(book: NodeBook, now: dt.datetime, trail: Trail, *, rebooted: bool) -> NodeBook:
    """Devices the node's reboot had taken over: repaired by it (when it ran), else back on their own path."""
    for device in book.devices:
        if device.awaiting_node:
            book = put(book, _start_device(book, _handed_back(device, now, trail, rebooted=rebooted), now, trail))
    return book


def _handed_back(record: EntityRecord, now: dt.datetime, trail: Trail, *, rebooted: bool) -> EntityRecord:
    record = msgspec.structs.replace(record, awaiting_node=False)
    if rebooted:
        return _settle(_without_repaired(record), "repaired by the node's reboot", now, trail)
    return _settle(record, "the node is back in service", now, trail)


def _without_repaired(record: EntityRecord) -> EntityRecord:
    """Without the conditions a successful repair cures: automatic actions, unless sticky."""
    kept = tuple(c for c in record.conditions if c.fault.sticky or c.fault.action not in AUTOMATIC_ACTIONS)
    return msgspec.structs.replace(record, conditions=kept)


def _settle(record: EntityRecord, reason: str, now: dt.datetime, trail: Trail) -> EntityRecord:
    """Quarantined while a fatal condition remains (one that needs a person), else healthy."""
    state: RemediationState = "healthy" if plan_of(record) == "none" else "quarantined"
    return _move(record, state, reason, now, trail) if state != record.state else record


def _move(
    record: EntityRecord,
    state: RemediationState,
    reason: str,
    now: dt.datetime,
    trail: Trail,
    **changes: object,
) -> EntityRecord:
    """The record in ``state``, with the transition noted for publishing."""
    moved = msgspec.structs.replace(record, state=state, reason=reason, since=now, **changes)
    trail.transitions.append(Transition(record=moved, previous=record.state))
    return moved
