"""What ``gpudra health status`` shows: every node's remediation book and the breaker, read from KV.

Read from the bucket rather than asked of a controller, so it works with any number of replicas, or none
running, from anywhere that reaches the bus.
"""

from __future__ import annotations

import datetime as dt

import msgspec
from nats.js.errors import KeyNotFoundError

from libs.bus import Bus
from libs.bus.topology import INVENTORY_BUCKET, REMEDIATION_BUCKET, inventory_key
from services.health.controller.books import BookStore, BreakerStore, StoredNode, Versioned
from services.health.controller.history import PastRemediation, read_history
from services.health.remediation import EntityRecord, node_status


class EntityStatus(msgspec.Struct, frozen=True, kw_only=True):
    entity: str
    """``node``, or the device name."""
    id: str
    state: str
    reason: str = ""
    since: dt.datetime | None = None
    attempt: int = 0
    faults: list[str] = msgspec.field(default_factory=list)
    """Conditions in force: ``xid-48``, ``gpu-lost``..."""


class NodeStatus(msgspec.Struct, frozen=True, kw_only=True):
    node: str
    state: str
    """The node's label: the worst state of the node and its devices."""
    entities: list[EntityStatus]
    cordoned_before: bool = False
    opted_out: bool = False
    work: list[str] = msgspec.field(default_factory=list)
    """Work in progress (``EvictPods gpu-3``...)."""
    held: list[str] = msgspec.field(default_factory=list)
    """Faults the open breaker holds."""


class BreakerStatus(msgspec.Struct, frozen=True, kw_only=True):
    state: str
    reason: str = ""
    quarantined_nodes: int = 0


class Status(msgspec.Struct, frozen=True, kw_only=True):
    breaker: BreakerStatus
    nodes: list[NodeStatus]
    recent: list[PastRemediation] = msgspec.field(default_factory=list)
    """Remediations of the history window, finished or not, oldest first (``history``)."""


async def read_status(bus: Bus, node: str | None = None, history: dt.timedelta | None = None) -> Status:
    """The books now, and the remediations whose events are younger than ``history`` (none when None)."""
    store = BookStore(await bus.kv(REMEDIATION_BUCKET))
    breaker, _ = await BreakerStore(store.kv).load()
    entries = [(node, await _one(bus, store, node))] if node else await store.all()
    nodes = [node_of(name, versioned.stored) for name, versioned in entries]
    return Status(
        breaker=BreakerStatus(state=breaker.state, reason=breaker.reason, quarantined_nodes=len(breaker.recent)),
        nodes=nodes,
        recent=await read_history(bus, node, history) if history else [],
    )


class UnknownNode(LookupError):
    """A node gpudra has neither a remediation record nor an inventory of: a typo, not a healthy node."""


async def _one(bus: Bus, store: BookStore, node: str) -> Versioned:
    versioned = await store.load(node)
    if versioned.revision == 0:
        try:
            await (await bus.kv(INVENTORY_BUCKET)).get(inventory_key(node))
        except KeyNotFoundError:
            raise UnknownNode(f"no node {node!r} is known to gpudra (no inventory, no remediation record)") from None
    return versioned


def node_of(name: str, stored: StoredNode) -> NodeStatus:
    book = stored.book
    worst, _ = node_status(book)
    work = []
    for entry in stored.outbox:
        if entry.long:
            device = getattr(entry.action(), "device", "")
            work.append(f"{entry.kind} {device or 'node'}")
    return NodeStatus(
        node=name,
        state=worst,
        entities=[_entity(book.record), *(_entity(r) for r in book.devices)],
        cordoned_before=book.cordoned_before,
        opted_out=book.opted_out,
        work=work,
        held=[f"{h.fault.name} on {h.fault.entity.device or h.fault.entity.id}" for h in stored.held],
    )


def _entity(record: EntityRecord) -> EntityStatus:
    return EntityStatus(
        entity=record.entity.device or "node",
        id=record.entity.id,
        state=record.state,
        reason=record.reason,
        since=record.since,
        attempt=record.attempt,
        faults=[c.fault.name for c in record.conditions],
    )
