"""The controller: lanes, books, the executor and the replicas' coordination, put together.

Every change of a node's book goes through the node's lane: the batch is decided (``Engine``), saved with
compare-and-set (``BookStore``), its messages acked, and only then performed (``Executor``). Quick actions
are done in the lane, so a node's actions never overtake each other; long work runs beside it and comes back
as an input. A crash anywhere leaves the outbox in KV, and whoever picks the node up (this replica after a
restart, or the leader when this replica is gone) does what is left, never what is done.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, TypeVar

from nats.aio.msg import Msg
from opentelemetry.trace import SpanKind

from libs.bus import Bus, Consumer, rpc
from libs.bus.election import Election, owner_of
from libs.bus.topology import LEASE_BUCKET, REMEDIATION_LEASE_PREFIX
from libs.bus.tracing import extract, messaging_span
from libs.events import CLUSTER, Envelope, Event
from libs.kube import KubeApi, open_kube, resolve_mode
from libs.slices import DRIVER_NAME
from libs.version import VERSION
from services.health.controller import metrics
from services.health.controller.admission import BreakerGate
from services.health.controller.books import BookStore, BreakerStore, StaleEntry, StoredNode, Versioned, fresh
from services.health.controller.cluster_view import ClusterView, NodeState
from services.health.controller.commands import Commands
from services.health.controller.config import ControllerConfig
from services.health.controller.consumer import intake
from services.health.controller.engine import (
    Adopt,
    Engine,
    HealthItem,
    InputItem,
    Item,
    MarkStarted,
    ReleaseHeld,
    Retry,
)
from services.health.controller.executor import Executor, failure
from services.health.controller.gpu_reset import GpuResetter
from services.health.controller.kube_actions import Drainer, NodeActions, parent_gpu
from services.health.controller.lanes import Lanes
from services.health.controller.outbox import Pending
from services.health.controller.reboot import RebootHook, reboot_hook
from services.health.controller.taint_rules import TaintRules
from services.health.controller.taints_store import TaintStore
from services.health.remediation import AnyInput, NodeObserved, RemediationSucceeded, Work
from services.health.settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")
COMMIT_ATTEMPTS = 20
RETRY_DELAYS = (0.5, 2.0, 5.0, 15.0, 30.0)
TIDY_SECONDS = 0.2
"""Done quick actions leave the outbox with the node's next write, or after this long in one of their own: a
remediation's steps follow each other within milliseconds, so most of them cost no write of their own."""
LOST_OUTCOME = "the controller stopped while it was under way; verifying it instead of doing it again"


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Controller:
    def __init__(
        self,
        bus: Bus,
        kube: KubeApi,
        config: ControllerConfig,
        *,
        kube_local: bool,
        backend: str = "nvml",
        reboot: str | RebootHook = "auto",
        clock: Callable[[], dt.datetime] = utc_now,
    ) -> None:
        self.bus = bus
        self.kube = kube
        self.config = config
        self.owner = owner_of(config.replica_id, config.incarnation)
        self._kube_local = kube_local
        self._backend = backend
        self._reboot_setting = reboot
        self._clock = clock
        self._cache: dict[str, Versioned] = {}
        self._changed: dict[str, asyncio.Event] = {}
        self._done: dict[str, set[str]] = {}
        self._running: dict[str, dict[str, asyncio.Task[None]]] = {}
        """Node → outbox entry id → the task doing that work here."""
        self._timers: set[asyncio.TimerHandle] = set()
        self._background: set[asyncio.Task[None]] = set()
        self._stack = AsyncExitStack()
        self.lanes = Lanes[Item](self._batch, workers=config.workers)
        self.view = ClusterView(bus, kube)
        self.taint_rules = TaintRules(kube, DRIVER_NAME, lambda: self.view.inventory)
        self.store: BookStore
        self.gate: BreakerGate
        self.engine: Engine
        self.executor: Executor
        self.election: Election
        self.commands: Commands
        self._consumer: Consumer | None = None

    # --- life -----------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Ready to decide once this returns: the view read, the lease tried, own leftovers adopted, and the
        consumer taking events. ``stop`` undoes whatever part of it was done."""
        stack = self._stack
        self.store = await BookStore.open(self.bus)
        self.gate = BreakerGate(BreakerStore(self.store.kv), self.config.breaker, self._publish)
        self.engine = Engine(self.config, self.view, self.gate, self.owner)
        self.executor = await self._executor()
        self.commands = Commands(self)
        metrics.DRY_RUN.set(self.config.rules.dry_run)
        metrics.BREAKER_OPEN.set((await self.gate.current()).state == "open")
        await self.view.start()
        stack.push_async_callback(self.view.stop)
        self.view.on_node = self._node_changed
        self.taint_rules.on_change = self._rule_changed
        await self.taint_rules.start()
        stack.push_async_callback(self.taint_rules.stop)
        self.election = Election(
            await self.bus.kv(LEASE_BUCKET),
            REMEDIATION_LEASE_PREFIX,
            replica=self.config.replica_id,
            incarnation=self.config.incarnation,
            renew_seconds=self.config.timing.lease_renew,
            on_change=self._leading,
        )
        await self.election.start()
        stack.push_async_callback(self.election.stop)
        stack.push_async_callback(self._stop_work)
        await self.sweep(own_only=not self.election.is_leader)
        consumer = intake(
            self.bus.js, self._dispatch, max_payload=self.bus.nc.max_payload, on_failure=self.bus.link.fail
        )
        await consumer.start()
        self._consumer = consumer
        stack.push_async_callback(consumer.stop)
        log.info(
            "remediation controller started",
            extra={"replica": self.owner, "leader": self.election.is_leader, "dry_run": self.config.rules.dry_run},
        )

    async def stop(self) -> None:
        """Stops taking events first, then the work in hand (the outbox keeps it), then leadership."""
        await self._stack.aclose()

    async def _stop_work(self) -> None:
        for handle in self._timers:
            handle.cancel()
        await self.lanes.close()
        await _cancel([task for tasks in self._running.values() for task in tasks.values()] + [*self._background])

    async def _executor(self) -> Executor:
        timing = self.config.timing
        resetter = GpuResetter(self.bus, timing.reset)
        hook = self._reboot_setting
        if isinstance(hook, str):
            hook = reboot_hook(
                hook,
                backend=self._backend,
                bus=self.bus,
                resetter=resetter,
                gpus=self._gpus,
                boots=self.view,
                timeout=timing.reboot,
            )
        return Executor(
            rules=self.config.rules,
            timing=timing,
            taints=await TaintStore.open(self.bus),
            nodes=NodeActions(self.kube, create_missing=self._kube_local),
            drainer=Drainer(self.kube, self.config.drain),
            resetter=resetter,
            reboot=hook,
            access=self,
            publish=self._publish,
            clock=self._clock,
            taint_rules=self.taint_rules,
        )

    # --- intake ---------------------------------------------------------------------------------------

    def _dispatch(self, node: str, envelope: Envelope[Event], msg: Msg) -> None:
        self.lanes.submit(node, HealthItem(envelope=envelope, message=msg))

    async def submit(self, node: str, given: AnyInput) -> None:
        """Feeds an input to the node's lane; returns once the book that took it is saved."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.lanes.submit(node, InputItem(input=given, done=done))
        await done

    async def mark_started(self, node: str, entry: str) -> bool:
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.lanes.submit(node, MarkStarted(entry=entry, done=done))
        return await done

    async def release_held(self, node: str) -> int:
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.lanes.submit(node, ReleaseHeld(done=done))
        return await done

    # --- one batch ------------------------------------------------------------------------------------

    async def _batch(self, node: str, items: list[Item]) -> None:
        first = next((i for i in items if isinstance(i, HealthItem)), None)
        parent = extract(getattr(first.message, "headers", None)) if first is not None else None
        attrs: dict[str, str | int] = {"gpudra.node": node, "gpudra.batch": len(items)}
        with messaging_span(f"remediate {node}", SpanKind.INTERNAL, attrs, parent):
            try:
                versioned = await self._commit(node, items)
            except Exception as exc:
                log.error("could not save the node's book; events will come again: %s", exc, extra={"node": node})
                await self._fail(items, exc)
                return
            await self._settle(node, items)
            self._signal(node)
            await self._perform(node, versioned.stored)

    async def _commit(self, node: str, items: list[Item]) -> Versioned:
        health = sum(isinstance(i, HealthItem) for i in items)
        if health:
            metrics.BATCH_SIZE.observe(health)
        for _ in range(COMMIT_ATTEMPTS):
            current = self._cache.get(node) or await self.store.load(node)
            done = frozenset(self._done.get(node, ()))
            stored = await self.engine.apply(node, current.stored, items, self._clock(), done)
            if stored == current.stored:
                self._cache[node] = current
                return current
            try:
                revision = await self.store.save(node, stored, current.revision)
            except StaleEntry:
                metrics.BOOK_WRITES.labels("conflict").inc()
                self._cache.pop(node, None)
                continue
            metrics.BOOK_WRITES.labels("ok").inc()
            _count_states(current.stored, -1)
            _count_states(stored, +1)
            self._cache[node] = Versioned(stored, revision)
            return self._cache[node]
        raise StaleEntry(f"node {node}: {COMMIT_ATTEMPTS} conflicting writes in a row")

    async def _settle(self, node: str, items: list[Item]) -> None:
        consumer = self._consumer
        for item in items:
            match item:
                case HealthItem(message=Msg() as msg) if consumer is not None:
                    metrics.EVENTS.labels(item.outcome).inc()
                    if item.outcome == "rejected":
                        metrics.EVENTS.labels("dead_lettered").inc()
                        await consumer.reject(msg, item.reason)
                    else:
                        await consumer.ack(msg)
                case InputItem(done=done) if done is not None:
                    _resolve(done, None)
                case MarkStarted(done=done) if done is not None:
                    _resolve(done, item.found)
                case ReleaseHeld(done=done) if done is not None:
                    _resolve(done, item.released)
                case Adopt(adopted=adopted) if adopted:
                    metrics.ADOPTED.inc(adopted)
                    log.warning("took over work left by another replica", extra={"node": node, "entries": adopted})

    async def _fail(self, items: list[Item], error: Exception) -> None:
        for item in items:
            match item:
                case HealthItem(message=Msg() as msg) if self._consumer is not None:
                    metrics.EVENTS.labels("retried").inc()
                    await self._consumer.retry(msg, item.envelope, error)
                case InputItem(done=done) | MarkStarted(done=done) | ReleaseHeld(done=done) if done is not None:
                    if not done.done():
                        done.set_exception(error)

    # --- doing ----------------------------------------------------------------------------------------

    async def _perform(self, node: str, stored: StoredNode) -> None:
        present = {entry.id for entry in stored.outbox}
        done = self._done.setdefault(node, set())
        done &= present
        mine = [entry for entry in stored.outbox if entry.owner == self.owner]
        quick = [entry for entry in mine if not entry.long and entry.id not in done]
        if quick:
            performed = await self.executor.perform(node, stored, quick)
            done.update(performed)
            if performed:
                self._retry_later(node, TIDY_SECONDS)  # writes the outbox without them, unless a batch does first
            if len(performed) < len(quick):
                self._retry_later(node)
        running = self._running.setdefault(node, {})
        for entry_id, task in list(running.items()):
            if entry_id not in present:
                task.cancel()
        for entry in mine:
            if entry.long and entry.id not in running:
                self._start(node, entry)

    def _retry_later(self, node: str, delay: float = RETRY_DELAYS[1]) -> None:
        def fire() -> None:
            self._timers.discard(handle)
            self.lanes.submit(node, Retry())

        handle = asyncio.get_running_loop().call_later(delay, fire)
        self._timers.add(handle)

    def _start(self, node: str, entry: Pending) -> None:
        running = self._running.setdefault(node, {})
        task = asyncio.create_task(self._work(node, entry), name=f"{entry.kind} {node}/{entry.id}")
        running[entry.id] = task

        def forget(finished: asyncio.Task[None]) -> None:
            if running.get(entry.id) is finished:
                del running[entry.id]

        task.add_done_callback(forget)

    async def _work(self, node: str, entry: Pending) -> None:
        try:
            await self._do_work(node, entry)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error("%s could not finish; trying again later: %r", entry.kind, exc, extra={"node": node})
            self._retry_later(node, RETRY_DELAYS[2])

    async def _do_work(self, node: str, entry: Pending) -> None:
        work = entry.action()
        assert isinstance(work, Work)
        extra = {"node": node, "device": work.device, "work": entry.kind, "cycle": work.cycle}
        if entry.once_only and work.disposition == "perform":
            if entry.started:
                log.warning("%s outcome lost in a restart; verifying instead", entry.kind, extra=extra)
                await self.executor.report(node, work, "skipped", LOST_OUTCOME)
                await self.submit(node, RemediationSucceeded(device=work.device, cycle=work.cycle, detail=LOST_OUTCOME))
                return
            if not await self.mark_started(node, entry.id):
                return
        for attempt, delay in enumerate((*RETRY_DELAYS, None)):
            try:
                outcome = await self.executor.run(node, work)
            except Exception as exc:
                if entry.once_only or delay is None:
                    log.exception("%s failed", entry.kind, extra=extra)
                    outcome = failure(work, f"{entry.kind} failed: {exc!r}")
                else:
                    log.warning(
                        "%s failed (try %d); again in %gs: %r", entry.kind, attempt + 1, delay, exc, extra=extra
                    )
                    await self.fresh(node, delay)
                    continue
            if outcome is not None:
                await self.submit(node, outcome)
            return

    # --- NodeAccess (for the executor) ----------------------------------------------------------------

    def current(self, node: str) -> StoredNode:
        versioned = self._cache.get(node)
        return versioned.stored if versioned is not None else fresh(node).stored

    async def fresh(self, node: str, timeout: float) -> StoredNode:
        changed = self._changed.setdefault(node, asyncio.Event())
        try:
            await asyncio.wait_for(changed.wait(), timeout)
        except TimeoutError:
            loaded = await self.store.load(node)
            cached = self._cache.get(node)
            if cached is None or loaded.revision > cached.revision:
                self._cache[node] = loaded
        return self.current(node)

    def _signal(self, node: str) -> None:
        changed = self._changed.pop(node, None)
        if changed is not None:
            changed.set()

    # --- leadership -----------------------------------------------------------------------------------

    def _leading(self, leader: bool) -> None:
        metrics.LEADER.set(leader)
        if leader:
            self._spawn(self._sweeping())

    def _node_changed(self, node: str, state: NodeState) -> None:
        """The leader hands every change of a Node to its lane as it happened, so a cordon a person lifts
        right after gpudra set it is still seen as a cordon, then an uncordon (which cancels the remediation)."""
        if self.election.is_leader:
            observed = NodeObserved(unschedulable=state.unschedulable, labels=state.labels)
            self.lanes.submit(node, InputItem(input=observed))

    async def _rule_changed(self, node: str, device: str) -> None:
        """An operator's DeviceTaintRules on a device changed: the leader says what the device's health now is,
        from the book as stored (this replica may not hold the node's book)."""
        if not self.election.is_leader:
            return
        try:
            stored = (await self.store.load(node)).stored
            await self.executor.announce_rules(node, stored, device)
        except Exception as exc:
            log.warning(
                "cannot announce the health of a device a DeviceTaintRule changed: %s",
                exc,
                extra={"node": node, "device": device},
            )

    async def _sweeping(self) -> None:
        while self.election.is_leader:
            try:
                await self.sweep(own_only=False)
            except Exception as exc:
                log.warning("sweep failed: %s", exc)
            await asyncio.sleep(self.config.timing.sweep)

    async def sweep(self, *, own_only: bool) -> None:
        """Adopts orphaned outbox entries (``own_only``: those of this replica's earlier incarnations) and
        brings books whose Node changed in line."""
        alive = await self.election.alive()
        alive[self.election.replica] = self.config.incarnation
        orphaned = self.election.orphaned(alive)

        def adoptable(owner: str) -> bool:
            mine = owner.partition("/")[0] == self.election.replica
            return orphaned(owner) and (mine or not own_only)

        for node, versioned in await self.store.all():
            stored = versioned.stored
            if any(entry.owner != self.owner and adoptable(entry.owner) for entry in stored.outbox):
                self.lanes.submit(node, Adopt(orphaned=adoptable))
            elif not own_only and self._drifted(node, stored):
                self.lanes.submit(node, Retry())

    def _drifted(self, node: str, stored: StoredNode) -> bool:
        state = self.view.nodes.get(node)
        return state is not None and state.unschedulable != stored.book.unschedulable

    # --- helpers --------------------------------------------------------------------------------------

    def _gpus(self, node: str) -> tuple[list[str], list[str]]:
        published = [d for d in self.view.inventory.get(node, ()) if parent_gpu(d) == d]
        faulted = sorted({parent_gpu(r.entity.device) for r in self.current(node).book.devices if r.entity.device})
        return published, faulted

    async def _publish(self, event: Event, event_id: str) -> None:
        await self.bus.publish(event, event_id=event_id)

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


def _count_states(stored: StoredNode, sign: int) -> None:
    for record in (stored.book.record, *stored.book.devices):
        if record.state != "healthy":
            metrics.ENTITIES.labels(record.scope, record.state).inc(sign)


def _resolve(future: asyncio.Future[T], value: T) -> None:
    if not future.done():
        future.set_result(value)


async def _cancel(tasks: list[asyncio.Task[Any]]) -> None:
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


@asynccontextmanager
async def running_controller(
    bus: Bus,
    settings: Settings,
    config: ControllerConfig,
    *,
    reboot: str | RebootHook | None = None,
    clock: Callable[[], dt.datetime] = utc_now,
) -> AsyncIterator[Controller]:
    """Opens the Kubernetes API the settings name, starts the controller, serves its commands on the
    cluster-wide subjects (``gpudra.v1._cluster.rpc.remediation.*``, as the ``health`` service of node
    ``_cluster`` in ``nats micro ls``), and stops it all on exit."""
    kube = await open_kube(settings, bus.js)
    local = resolve_mode(settings.kube_mode, settings.kubeconfig, os.environ) == "local"
    controller = Controller(
        bus,
        kube,
        config,
        kube_local=local,
        backend=settings.backend,
        reboot=settings.reboot_hook if reboot is None else reboot,
        clock=clock,
    )
    try:
        await controller.start()
        service = await rpc.serve(
            bus.nc,
            name="health",
            version=VERSION,
            node=CLUSTER,
            endpoints=controller.commands.endpoints(),
            metadata={"role": "remediation controller", "replica": controller.owner},
            description="gpudra remediation controller (operator commands)",
        )
        try:
            yield controller
        finally:
            await service.stop()
    finally:
        await controller.stop()
        await kube.close()
