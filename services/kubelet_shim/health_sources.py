"""Feeding the health view from the bus: the inventory KV entry (here) and the node's DeviceHealthChanged
events (``libs.bus.device_health``).

Both are JetStream ordered consumers (a KV watch is one too): nothing durable to clean up, they replay
what they need at start (the current inventory; the node's health events, oldest first, so the last word
on each device wins) and nats-py recreates them after a reconnect or a missed heartbeat, from the next
sequence. A restarted shim therefore finds the same state; a restarted NATS loses nothing.
"""

from __future__ import annotations

import asyncio
import logging

import msgspec
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue

from libs.bus import Bus
from libs.bus.topology import INVENTORY_BUCKET
from libs.bus.watching import stop_watching
from libs.devices.model import Inventory
from libs.events import node_token
from services.kubelet_shim.health_view import HealthView, devices_of

log = logging.getLogger(__name__)


class InventoryWatch:
    """Keeps the view's device list equal to the node's entry in the inventory bucket."""

    def __init__(self, bus: Bus, view: HealthView, node: str) -> None:
        self._bus = bus
        self._view = view
        self._node = node
        self.synced = asyncio.Event()
        self._watcher: KeyValue.KeyWatcher | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        kv = await self._bus.kv(INVENTORY_BUCKET)
        self._watcher = await kv.watch(node_token(self._node))
        self._task = asyncio.create_task(self._run(self._watcher), name="inventory watch")

    async def _run(self, watcher: KeyValue.KeyWatcher) -> None:
        async for entry in watcher:
            if entry is None:  # the marker after the initial value: we hold what the bucket holds
                self.synced.set()
                continue
            self._apply(entry)

    def _apply(self, entry: KeyValue.Entry) -> None:
        extra = {"node": self._node, "revision": entry.revision}
        if entry.operation in (KV_DEL, KV_PURGE):
            self._view.set_devices([])
            log.info("inventory removed; reporting no devices", extra=extra)
            return
        try:
            inventory = msgspec.json.decode(entry.value or b"", type=Inventory)
        except msgspec.DecodeError as exc:
            log.warning("unreadable inventory entry; keeping the previous device list: %s", exc, extra=extra)
            return
        devices = devices_of(inventory)
        self._view.set_devices(devices)
        log.info("inventory loaded", extra={**extra, "devices": len(devices)})

    async def stop(self) -> None:
        await stop_watching(self._watcher, self._task)
