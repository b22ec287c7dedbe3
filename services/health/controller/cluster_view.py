"""What the controller knows of the cluster besides health events: each node's devices (discovery's
inventory bucket), and each Node's cordon, labels and boot id (a Node watch).

Every replica keeps this view: a lane brings a book up to date with it before deciding anything, so a fault
is judged against the node's current inventory and cordon whichever replica takes it. The leader also hands
each change of a Node to its lane as it happened (``on_node``), because a person's uncordon must cancel a
remediation even if no health event comes, and a cordon lifted right after gpudra set it must be seen as a
cordon first, then an uncordon (the current value alone would miss both).

The boot id (``status.nodeInfo.bootID``, which the kubelet reads from ``/proc/sys/kernel/random/boot_id``) is
how the reboot hook tells that a node really rebooted: a command that exits 0 has only asked for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import msgspec
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue

from libs.bus import Bus
from libs.bus.topology import INVENTORY_BUCKET
from libs.bus.watching import stop_watching
from libs.devices.model import Inventory
from libs.events.subjects import node_from_token
from libs.kube import NODES, Expired, KubeApi, KubeError, Obj
from libs.kube.follow import stop_if_cancelled

log = logging.getLogger(__name__)

RETRY_SECONDS = 2.0


class NodeState(msgspec.Struct, frozen=True, kw_only=True):
    unschedulable: bool
    labels: dict[str, str] = msgspec.field(default_factory=dict)


def node_state(obj: Obj) -> NodeState:
    return NodeState(
        unschedulable=bool((obj.get("spec") or {}).get("unschedulable")),
        labels=dict((obj.get("metadata") or {}).get("labels") or {}),
    )


def boot_id(obj: Obj) -> str:
    """The boot the kubelet reported last; empty when none has (no kubelet, as in standalone mode)."""
    return str(((obj.get("status") or {}).get("nodeInfo") or {}).get("bootID") or "")


def device_names(value: bytes) -> tuple[str, ...]:
    inventory = msgspec.json.decode(value, type=Inventory)
    return tuple(sorted([gpu.name for gpu in inventory.gpus] + [mig.name for mig in inventory.mig_devices]))


class ClusterView:
    def __init__(self, bus: Bus, kube: KubeApi) -> None:
        self._bus = bus
        self._kube = kube
        self.inventory: dict[str, tuple[str, ...]] = {}
        self.nodes: dict[str, NodeState] = {}
        self.boot_ids: dict[str, str] = {}
        self._boot_changed: dict[str, asyncio.Event] = {}
        self.on_node: Callable[[str, NodeState], None] | None = None
        """Called for every change of a Node's cordon or labels after the first listing."""
        self._watcher: KeyValue.KeyWatcher | None = None
        self._tasks: list[asyncio.Task[None]] = []

    def gpu_nodes(self) -> int:
        return sum(1 for devices in self.inventory.values() if devices)

    async def new_boot(self, node: str, before: str, timeout: float) -> str:
        """The node's boot id once it is reported and differs from ``before``; ``TimeoutError`` after
        ``timeout`` seconds."""
        async with asyncio.timeout(timeout):
            while (current := self.boot_ids.get(node, "")) in ("", before):
                await self._boot_changed.setdefault(node, asyncio.Event()).wait()
        return current

    async def start(self) -> None:
        """Returns once both the inventories and the Nodes have been read once."""
        kv = await self._bus.kv(INVENTORY_BUCKET)
        self._watcher = await kv.watchall()
        synced = asyncio.Event()
        self._tasks.append(asyncio.create_task(self._follow_inventory(self._watcher, synced), name="inventory view"))
        version = await self._list_nodes()
        self._tasks.append(asyncio.create_task(self._follow_nodes(version), name="node view"))
        await synced.wait()

    async def stop(self) -> None:
        await stop_watching(self._watcher, *self._tasks)

    async def _follow_inventory(self, watcher: KeyValue.KeyWatcher, synced: asyncio.Event) -> None:
        async for entry in watcher:
            if entry is None:
                synced.set()
                continue
            node = node_from_token(entry.key)
            if entry.operation in (KV_DEL, KV_PURGE):
                self.inventory.pop(node, None)
                continue
            try:
                self.inventory[node] = device_names(entry.value or b"")
            except msgspec.DecodeError as exc:
                log.warning("unreadable inventory entry; keeping the last one", extra={"node": node, "error": str(exc)})

    async def _list_nodes(self) -> str:
        while True:
            try:
                listed = await self._kube.list(NODES)
            except KubeError as exc:
                log.warning("cannot list Nodes; retrying: %s", exc)
                await asyncio.sleep(RETRY_SECONDS)
                continue
            for obj in listed.items:
                name = str(obj["metadata"]["name"])
                self.nodes[name] = node_state(obj)
                self._note_boot(name, obj)
            return listed.resource_version

    async def _follow_nodes(self, version: str) -> None:
        while True:
            try:
                async with contextlib.aclosing(self._kube.watch(NODES, resource_version=version)) as events:
                    async for kind, obj in events:
                        self._node_event(kind, obj)
            except Expired:
                version = await self._list_nodes()
            except KubeError as exc:
                stop_if_cancelled()
                log.warning("Node watch failed; listing again: %s", exc)
                await asyncio.sleep(RETRY_SECONDS)
                version = await self._list_nodes()

    def _node_event(self, kind: str, obj: Obj) -> None:
        name = str(obj["metadata"]["name"])
        if kind == "DELETED":
            self.nodes.pop(name, None)
            self.boot_ids.pop(name, None)
            return
        self._note_boot(name, obj)
        state = node_state(obj)
        if self.nodes.get(name) == state:
            return
        self.nodes[name] = state
        if self.on_node is not None:
            self.on_node(name, state)

    def _note_boot(self, name: str, obj: Obj) -> None:
        boot = boot_id(obj)
        if self.boot_ids.get(name) != boot:
            self.boot_ids[name] = boot
            waiting = self._boot_changed.pop(name, None)
            if waiting is not None:
                waiting.set()
