"""The node side of the health service: the monitors of this node's GPUs and the GPU-reset executor.

The service's lifespan calls it when its role includes ``node``::

    backend = await open_configured_backend(settings)
    monitors = MonitorSettings.from_settings(settings)
    async with node_agent(bus, backend, monitors, Path(settings.state_dir) / "health") as endpoints:
        ...  # yield ``endpoints`` (ResetGpu) with the service's other endpoints; close the backend after

Started monitors: ``inventory`` (the node), ``device-events`` (every GPU) and ``counters/gpu-<minor>`` (one per
GPU, added as GPUs appear), all under one watchdog. The context waits, up to ``startup_seconds``, for each to
answer once, so a fault injected right after it is entered is seen.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from libs.bus import Bus, Endpoint
from libs.devices import DeviceBackend
from libs.events.catalogue.health import ResetGpu
from services.health.monitors import event_stream, inventory
from services.health.monitors.config import MonitorSettings
from services.health.monitors.entities import EntityMap, node_entity
from services.health.monitors.event_stream import EventStreamMonitor
from services.health.monitors.gpu_reset import GpuLocks, GpuResetter
from services.health.monitors.inventory import InventoryMonitor
from services.health.monitors.ledger import ConditionLedger
from services.health.monitors.pollers import CounterPoller, poller_name
from services.health.monitors.reporter import Reporter
from services.health.monitors.watchdog import MonitorSpec, Watchdog, cancel_all

log = logging.getLogger(__name__)

RESET_CONCURRENCY = 8
"""Resets of different GPUs at once (one per GPU at a time regardless)."""


@asynccontextmanager
async def node_agent(
    bus: Bus, backend: DeviceBackend, settings: MonitorSettings, state_dir: Path | None = None
) -> AsyncIterator[list[Endpoint[Any]]]:
    """Runs the monitors while the context is open; yields the endpoints to serve (``ResetGpu``).

    ``state_dir`` keeps the active conditions across restarts (None: in memory only).
    """
    if backend.node != bus.node:
        raise ValueError(f"the device backend is node {backend.node}'s, the bus speaks for node {bus.node}")
    agent = NodeAgent(bus, backend, settings, await ConditionLedger.load(backend.node, state_dir))
    try:
        await agent.start()
        yield [Endpoint(ResetGpu, agent.resetter, concurrency=RESET_CONCURRENCY)]
    finally:
        await agent.stop()


class NodeAgent:
    def __init__(self, bus: Bus, backend: DeviceBackend, settings: MonitorSettings, ledger: ConditionLedger) -> None:
        self.node = backend.node
        self._backend = backend
        self._settings = settings
        self._ledger = ledger
        self.reporter = Reporter(bus, self.node, ledger)
        self.entities = EntityMap(self.node)
        self._locks = GpuLocks()
        self.resetter = GpuResetter(backend, self.reporter, self.entities, self._locks)
        self.watchdog = Watchdog(
            self.reporter, restart_seconds=settings.restart_seconds, max_restart_seconds=settings.max_restart_seconds
        )
        self._polled: set[int] = set()
        self._judge: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Starts every monitor, then waits for their first answers (the pollers come with the inventory)."""
        self._remember_ledger_gpus()
        self.watchdog.start(self._inventory_spec())
        self.watchdog.start(self._stream_spec())
        self._ensure_pollers(self.entities.minors())
        self._judge = asyncio.create_task(self.watchdog.run(self._settings.tick_seconds), name="watchdog")
        answered = await self._first_answers()
        log.info(
            "node monitors started" if answered else "node monitors started; some have not answered yet",
            extra={"node": self.node, "gpus": len(self._polled), "active_conditions": len(self._ledger.entries())},
        )

    async def _first_answers(self) -> bool:
        """True once every monitor answered, including the pollers the first inventory added."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._settings.startup_seconds
        while (left := deadline - loop.time()) > 0:
            count = len(self._polled)
            if await self.watchdog.answered(left) and count == len(self._polled):
                return True
        return False

    async def stop(self) -> None:
        if self._judge is not None:
            await cancel_all([self._judge])
        await self.watchdog.stop()

    def _remember_ledger_gpus(self) -> None:
        """GPUs with active conditions from the last run are watched even if the inventory leaves them out
        (a lost GPU), so their conditions can clear."""
        for entry in self._ledger.entries():
            condition = entry.condition
            if condition.minor >= 0:
                self.entities.remember(condition.minor, condition.entity)

    def _ensure_pollers(self, minors: list[int]) -> None:
        for minor in minors:
            if minor not in self._polled:
                self._polled.add(minor)
                self.watchdog.start(self._poller_spec(minor))

    def _inventory_spec(self) -> MonitorSpec:
        monitor = InventoryMonitor(
            self._backend, self.entities, interval=self._settings.inventory_seconds, on_gpus=self._ensure_pollers
        )
        node = node_entity(self.node)
        deadline = self._settings.inventory_seconds + self._settings.deadline_seconds
        return MonitorSpec(name=inventory.MONITOR_NAME, run=monitor.run, entities=lambda: (node,), deadline=deadline)

    def _stream_spec(self) -> MonitorSpec:
        monitor = EventStreamMonitor(self._backend, self.reporter, self.entities)
        return MonitorSpec(name=event_stream.MONITOR_NAME, run=monitor.run, entities=self.entities.gpus, deadline=None)

    def _poller_spec(self, minor: int) -> MonitorSpec:
        poller = CounterPoller(
            self._backend,
            self.reporter,
            self.entities,
            self._locks,
            minor,
            interval=self._settings.poll_seconds,
            thresholds=self._settings.thresholds,
        )
        return MonitorSpec(
            name=poller_name(minor),
            run=poller.run,
            entities=lambda: (self.entities.gpu(minor),),
            deadline=self._settings.deadline_seconds,
            minor=minor,
        )
