"""The inventory monitor: reads the node's GPUs and MIG devices at an interval so the others follow them.

A new GPU gets its poller, a new MIG device its name in XID reports. It covers the node entity: when the
inventory cannot be read, the node itself is unmonitored (new GPUs and MIG devices would go unseen).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from libs.devices import DeviceBackend
from services.health.monitors.entities import EntityMap
from services.health.monitors.watchdog import Heartbeat

MONITOR_NAME = "inventory"


class InventoryMonitor:
    def __init__(
        self, backend: DeviceBackend, entities: EntityMap, *, interval: float, on_gpus: Callable[[list[int]], None]
    ) -> None:
        self._backend = backend
        self._entities = entities
        self._interval = interval
        self._on_gpus = on_gpus

    async def run(self, beat: Heartbeat) -> None:
        while True:
            self._entities.update(await self._backend.inventory())
            self._on_gpus(self._entities.minors())
            beat()
            await asyncio.sleep(self._interval)
