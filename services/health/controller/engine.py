"""One node's batch, decided: from the stored node and what arrived to the node as it must be stored next.

A batch holds health events and internal items (an outcome of work, a person's reset, a Node change, a
"started" mark, an adoption of orphaned work); quick actions done since the last write leave the outbox with
it. The engine brings the book up to date with the cluster view,
runs each item through the rules (``assess``, the circuit breaker, ``step``), and puts what must be done in
the outbox. It performs nothing: the controller saves the result with compare-and-set and only then acts, so
a conflict simply runs the same batch again over the newer book.

A duplicate changes nothing at all (not even the dedup memory's pruning), so a flood of copies costs no
write. An event the rules cannot read, or one whose node is not the subject's, is marked for the dead letters
with the reason, and the rest of the batch goes on.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable, Set
from dataclasses import dataclass, field
from typing import Literal

import msgspec

from libs.events import Envelope, Event
from libs.events.catalogue.health import FaultClassified, HealthEvent
from libs.events.catalogue.remediation import RemediationStateChanged
from libs.events.envelope import source_node
from libs.events.subjects import node_token
from services.health.catalogue import MalformedHealthEvent
from services.health.controller import metrics
from services.health.controller.admission import BreakerGate
from services.health.controller.books import StoredNode
from services.health.controller.cluster_view import ClusterView
from services.health.controller.config import ControllerConfig
from services.health.controller.live import LiveView, observe
from services.health.controller.outbox import Pending, pending, prune, wanted
from services.health.remediation import (
    Action,
    AnyInput,
    EscalateToNode,
    FaultDetected,
    InventoryObserved,
    NodeBook,
    NodeObserved,
    Publish,
    assess,
    escalate,
    needs_admission,
    step,
)
from services.health.remediation.dedup import event_time

log = logging.getLogger(__name__)

Outcome = Literal["", "decided", "duplicate", "rejected"]


@dataclass(eq=False)
class HealthItem:
    """A health event from the stream; ``outcome`` and ``reason`` say what became of it."""

    envelope: Envelope[Event]
    message: object = None
    """The JetStream message to settle (the consumer's)."""
    outcome: Outcome = ""
    reason: str = ""


@dataclass(eq=False)
class InputItem:
    """An input for the rules (an outcome of work, a person's reset, a Node change), awaited by its sender."""

    input: AnyInput
    done: asyncio.Future[None] | None = None


@dataclass(eq=False)
class MarkStarted:
    """A GPU reset or reboot is about to be sent: record it, so a restart never sends it again."""

    entry: str
    done: asyncio.Future[bool] | None = None
    found: bool = False


@dataclass(eq=False)
class Adopt:
    """Take over outbox entries whose owner is dead or restarted."""

    orphaned: Callable[[str], bool]
    adopted: int = 0


@dataclass(eq=False)
class ReleaseHeld:
    """The breaker was reset: the faults it held go through admission again."""

    done: asyncio.Future[int] | None = None
    released: int = 0


@dataclass(eq=False)
class Retry:
    """Nothing to decide: look at the outbox again (quick actions that failed)."""


Item = HealthItem | InputItem | MarkStarted | Adopt | ReleaseHeld | Retry


@dataclass
class _Batch:
    """The node as the batch changes it."""

    stored: StoredNode
    owner: str
    book: NodeBook = field(init=False)
    live: LiveView = field(init=False)
    outbox: list[Pending] = field(init=False)
    held: list[FaultDetected] = field(init=False)
    steps: int = field(init=False)
    detected: dt.datetime | None = None

    def __post_init__(self) -> None:
        self.book, self.live = self.stored.book, self.stored.live
        self.outbox, self.held = list(self.stored.outbox), list(self.stored.held)
        self.steps = self.stored.steps

    def add(self, actions: list[Action]) -> None:
        if not actions:
            return
        self.steps += 1
        self.outbox += pending(actions, step=self.steps, owner=self.owner, detected=self.detected)

    def hold(self, fault: FaultDetected) -> None:
        key = _condition(fault)
        self.held = [h for h in self.held if _condition(h) != key] + [msgspec.structs.replace(fault, held=False)]

    def result(self) -> StoredNode:
        return msgspec.structs.replace(
            self.stored,
            book=self.book,
            live=self.live,
            outbox=prune(self.outbox, self.book),
            held=tuple(self.held),
            steps=self.steps,
        )


def _condition(fault: FaultDetected) -> tuple[str, str, str]:
    return fault.fault.entity.id, fault.fault.check, fault.fault.code


class Engine:
    def __init__(self, config: ControllerConfig, view: ClusterView, gate: BreakerGate, owner: str) -> None:
        self._config = config
        self._rules = config.rules
        self._view = view
        self._gate = gate
        self.owner = owner

    async def apply(
        self, node: str, stored: StoredNode, items: list[Item], now: dt.datetime, done: Set[str] = frozenset()
    ) -> StoredNode:
        """The node after ``items``, without the quick actions already ``done``; equal to ``stored`` when nothing
        changed (then nothing is written)."""
        batch = _Batch(stored, self.owner)
        batch.outbox = [e for e in batch.outbox if e.long or e.id not in done]
        await self._sync(node, batch, now)
        for item in items:
            await self._item(node, batch, item, now)
        return batch.result()

    async def _item(self, node: str, batch: _Batch, item: Item, now: dt.datetime) -> None:
        match item:
            case HealthItem():
                await self._health(node, batch, item, now)
            case InputItem():
                await self._input(node, batch, item.input, now)
            case MarkStarted():
                item.found = _mark_started(batch, item.entry)
            case Adopt():
                item.adopted = _adopt(batch, item.orphaned)
            case ReleaseHeld():
                held, batch.held = batch.held, []
                item.released = len(held)
                for fault in held:
                    await self._input(node, batch, fault, now)
            case Retry():
                pass

    async def _sync(self, node: str, batch: _Batch, now: dt.datetime) -> None:
        """Brings the book up to date with the node's inventory and Node as this replica sees them."""
        devices = self._view.inventory.get(node)
        if devices is not None and devices != batch.book.inventory:
            await self._input(node, batch, InventoryObserved(devices=devices), now)
        state = self._view.nodes.get(node)
        if state is None:
            return
        opted_out = state.labels.get(self._rules.opt_out_label) == self._rules.opt_out_value
        if (state.unschedulable, opted_out) != (batch.book.unschedulable, batch.book.opted_out):
            await self._input(node, batch, NodeObserved(unschedulable=state.unschedulable, labels=state.labels), now)

    async def _health(self, node: str, batch: _Batch, item: HealthItem, now: dt.datetime) -> None:
        event = item.envelope.data
        if not isinstance(event, HealthEvent):
            return _reject(item, node, f"{type(event).__name__} is not a HealthEvent")
        if event.node != node:
            return _reject(item, node, f"event of node {event.node!r} published on node {node}'s subject")
        if source_node(item.envelope.source) != node:
            return _reject(item, node, f"ce-source {item.envelope.source!r} is not a service of node {node}")
        try:
            node_token(event.node)
            book, decided = assess(batch.book, event, self._config.catalogue, now, item.envelope.id)
        except (MalformedHealthEvent, ValueError) as exc:
            return _reject(item, node, str(exc))
        if decided is None:
            item.outcome = "duplicate"
            return None
        item.outcome = "decided"
        batch.book = book
        batch.live = observe(batch.live, event, decided if isinstance(decided, FaultDetected) else None, now)
        detected = event_time(event, now)
        batch.detected = detected if batch.detected is None else min(batch.detected, detected)
        await self._input(node, batch, decided, now)
        return None

    async def _input(self, node: str, batch: _Batch, given: AnyInput, now: dt.datetime) -> None:
        """One step of the rules, with the breaker asked first when it would start a quarantine."""
        if await self._refused(node, batch, given, now):
            assert isinstance(given, FaultDetected)
            given = msgspec.structs.replace(given, held=True)
            batch.hold(given)
        batch.book, actions = step(batch.book, given, now, self._rules)
        _note(node, actions)
        batch.add(actions)
        for action in actions:
            if isinstance(action, EscalateToNode):
                await self._escalate(node, batch, action, now)

    async def _refused(self, node: str, batch: _Batch, given: AnyInput, now: dt.datetime) -> bool:
        """Whether the circuit breaker refuses the quarantine ``given`` would start."""
        if not isinstance(given, FaultDetected) or given.held:
            return False
        if not needs_admission(batch.book, given.fault, self._rules):
            return False
        return not await self._gate.admit(node, self._view.gpu_nodes(), now)

    async def _escalate(self, node: str, batch: _Batch, action: EscalateToNode, now: dt.datetime) -> None:
        """A device's resets ran out: its node-scope fault goes through escalation and the breaker."""
        fault, history = escalate(action.fault, batch.book.history, now, self._config.catalogue.escalation)
        batch.book = msgspec.structs.replace(batch.book, history=history)
        log.warning(
            "GPU resets ran out; falling back to a node reboot", extra={"node": node, "device": fault.entity.device}
        )
        await self._input(node, batch, FaultDetected(fault=fault), now)


def _reject(item: HealthItem, node: str, reason: str) -> None:
    item.outcome, item.reason = "rejected", reason
    log.warning("health event rejected: %s", reason, extra={"node": node, "event_id": item.envelope.id})


def _mark_started(batch: _Batch, entry_id: str) -> bool:
    for index, entry in enumerate(batch.outbox):
        if entry.id == entry_id and wanted(batch.book, entry):
            batch.outbox[index] = msgspec.structs.replace(entry, started=True)
            return True
    return False


def _adopt(batch: _Batch, orphaned: Callable[[str], bool]) -> int:
    adopted = 0
    for index, entry in enumerate(batch.outbox):
        if entry.owner != batch.owner and orphaned(entry.owner):
            batch.outbox[index] = msgspec.structs.replace(entry, owner=batch.owner)
            adopted += 1
    return adopted


def _note(node: str, actions: list[Action]) -> None:
    """Logs and counts the verdicts and transitions of one step."""
    for action in actions:
        if not isinstance(action, Publish):
            if action.disposition != "perform":
                metrics.ACTIONS.labels(type(action).__name__, action.disposition).inc()
                log.info("%s %s", action.disposition, type(action).__name__, extra={"node": node})
            continue
        event = action.event
        if isinstance(event, FaultClassified):
            metrics.VERDICTS.labels(event.disposition, event.action).inc()
            level = logging.INFO if event.disposition != "recorded" or event.action != "NONE" else logging.DEBUG
            log.log(
                level,
                "fault %s: %s, %s (%s)",
                event.fault,
                event.action,
                event.disposition,
                event.reason,
                extra={"node": node, "device": event.entity.device, "entity": event.entity.id},
            )
        elif isinstance(event, RemediationStateChanged):
            metrics.TRANSITIONS.labels(event.scope, event.state).inc()
            log.info(
                "%s %s → %s: %s",
                event.scope,
                event.previous,
                event.state,
                event.reason,
                extra={"node": node, "device": event.entity.device, "fault": event.fault, "attempt": event.attempt},
            )
