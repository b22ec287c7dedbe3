"""Performs what the rules decided, through the adapters, and turns long work into outcomes.

Quick actions (taints, the Node, events) are done in the node's lane right after the book is saved, in three
independent groups at once: the device taints entry (with the devices' health facts), one patch of the Node,
and the events. A group that fails is left in the outbox and tried again; the others are done.

Long work runs beside the lane and ends in an outcome the rules take back (``DrainSucceeded``,
``RemediationFailed``...), or in nothing when the book stopped wanting it meanwhile. Work marked dry-run is
answered with success at once, so the events show the whole path a fault would take.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Literal, Protocol

from libs.events import Event
from libs.events.catalogue.health import EntityRef
from libs.events.catalogue.remediation import RemediationStepCompleted, Step
from libs.events.envelope import new_event_id
from services.health.controller import metrics
from services.health.controller.books import StoredNode
from services.health.controller.config import Timing
from services.health.controller.gpu_reset import GpuResetter, RepairFailed
from services.health.controller.kube_actions import NODE_ACTIONS, Drainer, NodeActions, drained_devices
from services.health.controller.live import blocking
from services.health.controller.outbox import Pending, still_wanted
from services.health.controller.reboot import RebootHook
from services.health.controller.taint_rules import RuleTaint, TaintRules, with_rule_taints
from services.health.controller.taints_store import TaintStore, device_health
from services.health.remediation import (
    Action,
    CancelDrain,
    Cordon,
    DrainFailed,
    DrainSucceeded,
    EvictPods,
    Publish,
    RebootNode,
    RemediationConfig,
    RemediationFailed,
    RemediationSucceeded,
    ResetDevice,
    SetDeviceTaints,
    VerificationFailed,
    VerificationPassed,
    VerifyHealth,
    Work,
    device_taints,
    plan_drain,
    record_of,
)
from services.health.remediation.inputs import AnyOutcome

log = logging.getLogger(__name__)

StepOutcome = Literal["succeeded", "failed", "skipped", "dry-run"]

Publisher = Callable[[Event, str], Awaitable[None]]
Clock = Callable[[], dt.datetime]


class NodeAccess(Protocol):
    """The node's book as the controller holds it."""

    def current(self, node: str) -> StoredNode: ...

    async def fresh(self, node: str, timeout: float) -> StoredNode:
        """Returns after the node's book changed here, or after ``timeout`` with it read again from KV."""
        ...


class Executor:
    def __init__(
        self,
        *,
        rules: RemediationConfig,
        timing: Timing,
        taints: TaintStore,
        nodes: NodeActions,
        drainer: Drainer,
        resetter: GpuResetter,
        reboot: RebootHook,
        access: NodeAccess,
        publish: Publisher,
        clock: Clock,
        taint_rules: TaintRules | None = None,
    ) -> None:
        self._rules = rules
        self._taint_rules = taint_rules
        """An operator's DeviceTaintRules, counted beside the book's taints (None: not followed)."""
        self._timing = timing
        self._taints = taints
        self._nodes = nodes
        self._drainer = drainer
        self._resetter = resetter
        self._reboot = reboot
        self._access = access
        self._publish = publish
        self._clock = clock

    # --- quick actions --------------------------------------------------------------------------------

    async def perform(self, node: str, stored: StoredNode, entries: Sequence[Pending]) -> list[str]:
        """Does the entries; returns the ids done (a failed group's stay for another try)."""
        groups: dict[str, list[tuple[Pending, Action]]] = {"taints": [], "node": [], "events": [], "other": []}
        for entry in entries:
            action = entry.action()
            groups[_group(action)].append((entry, action))
        jobs = {
            "taints": lambda: self._device_taints(node, stored, groups["taints"]),
            "node": lambda: self._node(node, groups["node"]),
            "events": lambda: self._events(groups["events"]),
        }
        names = [name for name in jobs if groups[name]]
        results = await asyncio.gather(*(jobs[name]() for name in names), return_exceptions=True)
        done = [entry.id for entry, _ in groups["other"]]
        for name, result in zip(names, results, strict=True):
            if isinstance(result, BaseException):
                metrics.ACTIONS.labels(name, "failed").inc(len(groups[name]))
                log.warning("%s actions failed; trying again later: %s", name, result, extra={"node": node})
                continue
            metrics.ACTIONS.labels(name, "done").inc(len(groups[name]))
            done += [entry.id for entry, _ in groups[name]]
        return done

    async def _device_taints(self, node: str, stored: StoredNode, items: list[tuple[Pending, Action]]) -> None:
        """The node's complete taint map from the book, then each changed device's health fact."""
        await self._taints.write(node, device_taints(stored.book, self._rules))
        for entry, action in items:
            assert isinstance(action, SetDeviceTaints)
            record = record_of(stored.book, action.device)
            ruled = self.rule_taints(node, [action.device]).get(action.device, [])
            event = device_health(node, action.device, action.taints, record.reason if record else "", ruled)
            await self._taints.announce(event, f"rem:{node}:{entry.id}:health")
            log.info(
                "device health: %s", event.health, extra={"node": node, "device": action.device, "reason": event.reason}
            )
            if event.health == "Unhealthy" and entry.detected is not None:
                metrics.QUARANTINE_SECONDS.labels("device").observe(_since(entry.detected, self._clock()))

    async def announce_rules(self, node: str, stored: StoredNode, device: str) -> None:
        """The device's health after an operator's DeviceTaintRules on it changed: the book's taints and reason
        as they are, with the rules' taints as they now are."""
        record = record_of(stored.book, device)
        own = device_taints(stored.book, self._rules).get(device, ())
        ruled = self.rule_taints(node, [device]).get(device, [])
        event = device_health(node, device, own, record.reason if record else "", ruled)
        await self._taints.announce(event, new_event_id())
        log.info("device health: %s", event.health, extra={"node": node, "device": device, "reason": event.reason})

    def rule_taints(self, node: str, devices: Collection[str]) -> dict[str, list[RuleTaint]]:
        """The DeviceTaintRules' taints on these devices of the node (all its devices when none are named)."""
        if self._taint_rules is None:
            return {}
        return self._taint_rules.taints(node, devices or None)

    async def _node(self, node: str, items: list[tuple[Pending, Action]]) -> None:
        await self._nodes.apply(node, [action for _, action in items])
        names = ", ".join(type(action).__name__ for _, action in items)
        log.info("node updated: %s", names, extra={"node": node})
        for entry, action in items:
            if isinstance(action, Cordon) and entry.detected is not None:
                metrics.QUARANTINE_SECONDS.labels("node").observe(_since(entry.detected, self._clock()))

    async def _events(self, items: list[tuple[Pending, Action]]) -> None:
        publishes = [
            self._publish(action.event, f"rem:{action.node}:{entry.id}") for entry, action in _publishes(items)
        ]
        results = await asyncio.gather(*publishes, return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            raise failures[0]

    # --- long work -----------------------------------------------------------------------------------

    async def run(self, node: str, work: Work) -> AnyOutcome | None:
        """Does ``work`` to its end: its outcome, or None when the book stopped wanting it."""
        started = time.monotonic()
        if work.disposition == "dry-run":
            outcome: AnyOutcome | None = success(work, "dry-run: nothing was done")
        else:
            outcome = await self._run(node, work)
        if outcome is not None:
            await self._report(node, work, outcome, time.monotonic() - started)
        return outcome

    async def _run(self, node: str, work: Work) -> AnyOutcome | None:
        match work:
            case EvictPods():
                return await self._drain(node, work)
            case ResetDevice():
                return await self._repair(
                    work, self._resetter.reset(node, work.device, f"remediation attempt {work.attempt}")
                )
            case RebootNode():
                return await self._repair(work, self._reboot.reboot(node, work.mode))
            case VerifyHealth():
                return await self._verify(node, work)
        raise TypeError(f"not long work: {work!r}")

    async def _repair(self, work: Work, repair: Awaitable[str]) -> AnyOutcome:
        try:
            detail = await repair
        except RepairFailed as exc:
            log.warning("repair failed: %s", exc, extra={"node": work.node, "device": work.device})
            return RemediationFailed(device=work.device, cycle=work.cycle, detail=str(exc))
        return RemediationSucceeded(device=work.device, cycle=work.cycle, detail=detail)

    async def _drain(self, node: str, work: EvictPods) -> AnyOutcome | None:
        stored = self._access.current(node)
        record = record_of(stored.book, work.device)
        started = (record.since if record else None) or self._clock()
        devices = drained_devices(work.device)
        rechecked = False
        while still_wanted(stored.book, work):
            pods = await self._drainer.pods(node, with_devices=bool(devices))
            taints = with_rule_taints(device_taints(stored.book, self._rules), self.rule_taints(node, devices))
            plan = plan_drain(pods, devices, self._drainer.policy, started, self._clock(), taints=taints)
            if plan.done:
                skipped = f", {len(plan.skipped)} left (system or DaemonSet pods)" if plan.skipped else ""
                return DrainSucceeded(device=work.device, cycle=work.cycle, detail=f"no pods left to drain{skipped}")
            blocked = await self._drainer.carry_out(node, plan)
            if self._clock() - started > dt.timedelta(seconds=self._timing.drain_timeout):
                waiting = [f"{w.namespace}/{w.name}" for w in plan.wait] + blocked
                detail = f"after {self._timing.drain_timeout:g}s still waiting for {', '.join(waiting)}"
                return DrainFailed(device=work.device, cycle=work.cycle, detail=detail)
            progressed = len(plan.evict) > len(blocked) or bool(plan.delete)
            if progressed and not rechecked:
                rechecked = True  # evicted pods are usually gone at once: look again before waiting
                continue
            rechecked = False
            stored = await self._access.fresh(node, self._timing.drain_pass)
        return None

    async def _verify(self, node: str, work: VerifyHealth) -> AnyOutcome | None:
        deadline = time.monotonic() + self._timing.verify
        stored = self._access.current(node)
        while still_wanted(stored.book, work):
            record = record_of(stored.book, work.device)
            assert record is not None
            assert record.since is not None
            devices = {work.device} if work.device else None
            found = blocking(stored.live, devices, record.since)
            if not found:
                return VerificationPassed(device=work.device, cycle=work.cycle, detail="monitors report it healthy")
            left = deadline - time.monotonic()
            if left <= 0:
                what = ", ".join(c.describe() for c in found)
                detail = f"still faulty {self._timing.verify:g}s after the repair: {what}"
                return VerificationFailed(device=work.device, cycle=work.cycle, detail=detail)
            stored = await self._access.fresh(node, min(left, 1.0))
        return None

    async def _report(self, node: str, work: Work, outcome: AnyOutcome, seconds: float) -> None:
        succeeded = isinstance(outcome, _SUCCESSES)
        result: StepOutcome = "dry-run" if work.disposition == "dry-run" else "succeeded" if succeeded else "failed"
        metrics.WORK_SECONDS.labels(_STEPS[type(work)], result).observe(seconds)
        await self.report(node, work, result, outcome.detail, seconds)

    async def report(self, node: str, work: Work, result: StepOutcome, detail: str, seconds: float = 0.0) -> None:
        """Publishes ``RemediationStepCompleted`` (best effort: the state changes are the record)."""
        step = _STEPS[type(work)]
        record = record_of(self._access.current(node).book, work.device)
        entity = record.entity if record else EntityRef(kind="node", id=node)
        event = RemediationStepCompleted(
            node=node, entity=entity, step=step, outcome=result, detail=detail, duration_ms=seconds * 1000
        )
        key = f"rem:{node}:{work.device or 'node'}:{step}:{work.cycle}:{getattr(work, 'attempt', 0)}:{result}"
        try:
            await self._publish(event, key)
        except Exception as exc:
            log.warning("could not publish a step event: %s", exc, extra={"node": node, "device": work.device})


_STEPS: dict[type[Work], Step] = {
    EvictPods: "drain",
    ResetDevice: "gpu-reset",
    RebootNode: "reboot",
    VerifyHealth: "verify",
}
_SUCCESSES = (DrainSucceeded, RemediationSucceeded, VerificationPassed)


def success(work: Work, detail: str) -> AnyOutcome:
    match work:
        case EvictPods():
            return DrainSucceeded(device=work.device, cycle=work.cycle, detail=detail)
        case VerifyHealth():
            return VerificationPassed(device=work.device, cycle=work.cycle, detail=detail)
    return RemediationSucceeded(device=work.device, cycle=work.cycle, detail=detail)


def failure(work: Work, detail: str) -> AnyOutcome:
    match work:
        case EvictPods():
            return DrainFailed(device=work.device, cycle=work.cycle, detail=detail)
        case VerifyHealth():
            return VerificationFailed(device=work.device, cycle=work.cycle, detail=detail)
    return RemediationFailed(device=work.device, cycle=work.cycle, detail=detail)


def _group(action: Action) -> str:
    if isinstance(action, SetDeviceTaints):
        return "taints"
    if isinstance(action, NODE_ACTIONS):
        return "node"
    if isinstance(action, Publish):
        return "events"
    if isinstance(action, CancelDrain):
        log.info("drain cancelled", extra={"node": action.node, "device": action.device, "cycle": action.cycle})
    return "other"


def _publishes(items: list[tuple[Pending, Action]]) -> list[tuple[Pending, Publish]]:
    return [(entry, action) for entry, action in items if isinstance(action, Publish)]


def _since(detected: dt.datetime, now: dt.datetime) -> float:
    return max(0.0, (now - detected).total_seconds())
