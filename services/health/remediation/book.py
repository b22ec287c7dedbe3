"""The remediation state of one node, as one plain value: the node's record, one record per device that has
a condition, and what the rules remember (duplicates seen, escalation history, the Node as last observed).

It is what the controller keeps per node in the ``gpudra_remediation`` KV bucket; a restarted controller
reads it back and carries on.
"""

from __future__ import annotations

import datetime as dt

import msgspec

from libs.events.catalogue.health import EntityRef
from libs.events.catalogue.remediation import RemediationState
from services.health.catalogue import Fault, Scope
from services.health.remediation.dedup import DedupMemory
from services.health.remediation.escalation import History


class Condition(msgspec.Struct, frozen=True, kw_only=True):
    """One fault in force on an entity (NVSentinel's quarantine entry)."""

    fault: Fault
    since: dt.datetime


class EntityRecord(msgspec.Struct, frozen=True, kw_only=True):
    """Where one device, or the node, stands in the state machine."""

    scope: Scope
    entity: EntityRef
    state: RemediationState = "healthy"
    conditions: tuple[Condition, ...] = ()
    reason: str = ""
    since: dt.datetime | None = None
    cycle: int = 0
    """Counts drains started; outcomes of an earlier cycle are stale and ignored."""
    attempt: int = 0
    awaiting_node: bool = False
    """A device whose repair the node's reboot took over (or will): its own work stops meanwhile."""

    @property
    def key(self) -> str:
        """How inputs name the record: the device name, or empty for the node."""
        return self.entity.device if self.scope == "device" else ""


class NodeBook(msgspec.Struct, frozen=True, kw_only=True):
    node: str
    record: EntityRecord
    devices: tuple[EntityRecord, ...] = ()
    inventory: tuple[str, ...] | None = None
    """Device names the node publishes; None until the inventory is first seen (an unknown node)."""
    unschedulable: bool | None = None
    """The Node's ``spec.unschedulable`` as last observed; None before the first observation."""
    cordoned_before: bool = False
    """The node was cordoned before gpudra quarantined it: gpudra leaves that cordon in place."""
    cordon_seen: bool = False
    """The cordon was observed during this quarantine, so seeing the node schedulable means a person
    uncordoned it."""
    opted_out: bool = False
    history: History = msgspec.field(default_factory=History)
    dedup: DedupMemory = msgspec.field(default_factory=DedupMemory)


def new_book(node: str) -> NodeBook:
    return NodeBook(node=node, record=EntityRecord(scope="node", entity=EntityRef(kind="node", id=node)))


def record_of(book: NodeBook, device: str) -> EntityRecord | None:
    """The node's record for ``""``, else the device's (None when the device has no record)."""
    if not device:
        return book.record
    return next((r for r in book.devices if r.entity.device == device), None)


def put(book: NodeBook, record: EntityRecord) -> NodeBook:
    """``book`` with ``record`` in place; a healthy device with no condition left is forgotten."""
    if record.scope == "node":
        return msgspec.structs.replace(book, record=record)
    others = tuple(r for r in book.devices if r.entity.device != record.entity.device)
    keep = record.state != "healthy" or record.conditions
    devices = (*others, record) if keep else others
    return msgspec.structs.replace(book, devices=tuple(sorted(devices, key=lambda r: r.entity.device)))


def records(book: NodeBook) -> tuple[EntityRecord, ...]:
    return (book.record, *book.devices)
