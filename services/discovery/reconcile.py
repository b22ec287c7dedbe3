"""The discovery loop: read the inventory when something may have changed, and make everything follow it.

What makes it read again: the start, a hardware event that can change the device list (GPU lost), an injected
fault, a change of the devices' taints, and the resync period (nothing reports a GPU that comes back, a MIG
reconfiguration done with nvidia-smi, or a driver reload). Requests that arrive while a read runs are folded
into one more read, so a burst of events costs two reads, not one per event.

What follows a read that found a change, in this order: the KV entry (the state other services read), then
the ``InventoryChanged`` event (so whoever reacts to it reads the new state), then the ResourceSlices and a
``SlicesPublished`` event when they were written. A read that finds nothing new writes nothing, anywhere.

Nothing here ends the process: a failed read or publication is logged and retried after ``retry_seconds``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import msgspec

from libs.bus import Bus
from libs.devices import DeviceBackend
from libs.devices.errors import DeviceError, StateError
from libs.devices.events import DeviceEvent
from libs.devices.model import Inventory
from libs.devices.pci import VmGpus
from libs.events.catalogue.inventory import InventoryChanged
from libs.kube.slice_publisher import SlicePublishError
from libs.slices import SliceLayoutError
from services.discovery.inventory_store import InventoryRecord, InventoryStore, StaleRecord, record_of
from services.discovery.inventory_sync import InventoryChange, device_count, inventory_change, rereads_inventory
from services.discovery.slices_sync import SliceSync

log = logging.getLogger(__name__)

READ_ERRORS = (DeviceError, StateError, OSError)
_SAVE_ATTEMPTS = 3
STOP_GRACE_SECONDS = 10.0


class Reconciler:
    """Keeps the inventory entry, the inventory events and the node's slices in step with the hardware."""

    def __init__(
        self,
        *,
        bus: Bus,
        backend: DeviceBackend,
        store: InventoryStore,
        slices: SliceSync,
        resync_seconds: float,
        retry_seconds: float,
    ) -> None:
        self._bus = bus
        self._backend = backend
        self._store = store
        self._slices = slices
        self._resync_seconds = resync_seconds
        self._retry_seconds = retry_seconds
        self.node = backend.node
        self.record: InventoryRecord | None = None
        self._wake = asyncio.Event()
        self._failing = False
        self._unannounced: InventoryChanged | None = None
        self._stopping = False
        self._loop_task: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Subscribes to hardware events first (none is missed), then reads once before serving anything."""
        events = self._backend.events()
        self.record = await self._store.load()
        await self._sync_safely(starting=True)
        self._loop_task = asyncio.create_task(self._loop(), name="discovery loop")
        self._tasks = [asyncio.create_task(self._follow(events), name="hardware events")]

    def background(self, work: Awaitable[None], name: str) -> None:
        """Runs ``work`` (a watch feeding ``request``) for as long as the loop runs."""
        self._tasks.append(asyncio.ensure_future(work))
        self._tasks[-1].set_name(name)

    def request(self, why: str) -> None:
        """Asks for a read as soon as the current one (if any) is done."""
        log.debug("inventory read requested", extra={"node": self.node, "why": why})
        self._wake.set()

    async def stop(self) -> None:
        """Lets a sync under way finish (a write cut in half would only be redone, but a NATS subscription
        cancelled while being created stalls the connection's drain), then ends the other tasks."""
        self._stopping = True
        self._wake.set()
        if self._loop_task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._loop_task), STOP_GRACE_SECONDS)
            self._tasks.append(self._loop_task)
            self._loop_task = None
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    # --- the loop ---------------------------------------------------------------------------------------

    async def _loop(self) -> None:
        while not self._stopping:
            delay = self._retry_seconds if self._failing else self._resync_seconds
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)
            self._wake.clear()
            if not self._stopping:
                await self._sync_safely(starting=False)

    async def _follow(self, events: AsyncIterator[DeviceEvent]) -> None:
        """Hardware events that may change the device list trigger a read; a broken stream is reopened."""
        while True:
            try:
                async for event in events:
                    if rereads_inventory(event):
                        log.info(
                            "hardware event may have changed the inventory; reading it again",
                            extra={"node": self.node, "device": f"gpu-{event.minor}", "event": type(event).__name__},
                        )
                        self.request("hardware event")
            except Exception:  # the backend's stream is a boundary: whatever breaks it, reopen it
                log.exception("hardware event stream failed; reopening it", extra={"node": self.node})
            await asyncio.sleep(self._retry_seconds)
            events = self._backend.events()
            self.request("event stream reopened")

    async def _sync_safely(self, *, starting: bool) -> None:
        try:
            self._failing = not await self.sync(starting=starting)
        except Exception:
            log.exception("inventory sync failed; retrying later", extra={"node": self.node})
            self._failing = True

    # --- one sync ---------------------------------------------------------------------------------------

    async def sync(self, *, starting: bool = False) -> bool:
        """One read and what follows it; False when some part failed and a retry is due."""
        try:
            inventory = self._with_vm_gpus(await self._backend.inventory())
        except READ_ERRORS as exc:
            log.error("cannot read the inventory; keeping the last one", extra={"node": self.node, "error": str(exc)})
            return False
        await self._record(inventory, starting=starting)
        await self._announce()
        return await self._publish_slices(inventory, starting=starting)

    def _with_vm_gpus(self, inventory: Inventory) -> Inventory:
        """The GPUs a VM holds kept published across a restart of discovery, from the stored inventory: the
        backend keeps only those this process saw listed (``VmGpus``), and a restart while a VM holds a GPU must
        not unpublish it."""
        if self.record is None:
            return inventory
        remembered = VmGpus()
        pci = self._backend.pci()
        remembered.merge(self.record.gpus, pci)
        gpus = remembered.merge(inventory.gpus, pci)
        return inventory if gpus == inventory.gpus else msgspec.structs.replace(inventory, gpus=gpus)

    async def _record(self, inventory: Inventory, *, starting: bool) -> None:
        """Stores the inventory if it changed and queues its event; re-reads the entry if another writer won."""
        for _ in range(_SAVE_ATTEMPTS):
            previous = self.record.inventory() if self.record is not None else None
            change = inventory_change(previous, inventory, starting=starting)
            if change is None:
                return
            try:
                self.record = await self._stored(inventory, change, previous)
            except StaleRecord as exc:
                log.warning("inventory entry moved on; reading it again", extra={"node": self.node, "error": str(exc)})
                self.record = await self._store.load()
                continue
            self._unannounced = self._event(change, self.record)
            self._log_change(change, self.record)
            return
        raise StaleRecord(f"inventory of node {self.node} keeps changing under us; another discovery runs?")

    async def _stored(
        self, inventory: Inventory, change: InventoryChange, previous: Inventory | None
    ) -> InventoryRecord:
        """The new record, written to the bucket unless only the announcement is new (a restart, unchanged)."""
        if self.record is not None and previous is not None and previous.content_hash() == inventory.content_hash():
            return self.record
        generation = (self.record.generation if self.record is not None else 0) + 1
        record = record_of(inventory, generation=generation, reason=change.reason)
        await self._store.save(record)
        return record

    def _event(self, change: InventoryChange, record: InventoryRecord) -> InventoryChanged:
        return InventoryChanged(
            node=self.node,
            generation=record.generation,
            reason=change.reason,
            device_count=device_count(record),
            added=change.added,
            removed=change.removed,
            changed=change.changed,
        )

    async def _announce(self) -> None:
        """Publishes the queued event; kept queued (and sent on the next sync) if the bus refuses it."""
        event = self._unannounced
        if event is None:
            return
        await self._bus.publish(event)
        self._unannounced = None

    async def _publish_slices(self, inventory: Inventory, *, starting: bool) -> bool:
        try:
            result = await self._slices.publish(inventory)
        except (SlicePublishError, SliceLayoutError) as exc:
            log.error("cannot publish ResourceSlices; retrying later", extra={"node": self.node, "error": str(exc)})
            return False
        if result.writes or starting:
            await self._bus.publish(result.event())
        return True

    def _log_change(self, change: InventoryChange, record: InventoryRecord) -> None:
        fields: dict[str, Any] = {"node": self.node, "generation": record.generation, "reason": change.reason}
        for device in change.removed:
            log.warning("device gone from the inventory", extra={**fields, "device": device})
        for device in change.added if change.reason != "start" else ():
            log.info("device added to the inventory", extra={**fields, "device": device})
        log.info(
            "inventory changed",
            extra={
                **fields,
                "devices": device_count(record),
                "added": change.added,
                "removed": change.removed,
                "changed": change.changed,
            },
        )
