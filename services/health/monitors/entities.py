"""Which GPU or MIG device a hardware report is about, as the entity a HealthEvent names.

NVML reports a GPU by its handle (we know the minor and uuid) and a MIG device only by the GPU and compute
instance ids inside its parent; the DRA device name (``gpu-3-mig-1g10gb-19-6``) is what the controller can
taint, so the map keeps the node's current MIG devices by (minor, GI id, CI id). GPUs are never forgotten:
one that leaves the inventory is lost, not gone, and its monitors must keep reporting about it.
"""

from __future__ import annotations

from libs.devices.model import Gpu, Inventory, MigDevice
from libs.devices.names import gpu_device_name
from libs.events.catalogue.health import EntityRef


def gpu_entity(minor: int, uuid: str) -> EntityRef:
    return EntityRef(kind="gpu", id=uuid, device=gpu_device_name(minor))


def mig_entity(device: MigDevice) -> EntityRef:
    return EntityRef(kind="mig", id=device.uuid, device=device.name)


def node_entity(node: str) -> EntityRef:
    return EntityRef(kind="node", id=node, device="")


class EntityMap:
    """The node's GPUs (every one ever seen) and current MIG devices, updated from inventories."""

    def __init__(self, node: str) -> None:
        self.node = node
        self._gpus: dict[int, EntityRef] = {}
        self._bus_ids: dict[int, str] = {}
        self._migs: dict[tuple[int, int, int], MigDevice] = {}

    def update(self, inventory: Inventory) -> list[Gpu]:
        """Takes in a fresh inventory; returns the GPUs seen for the first time."""
        new = [gpu for gpu in inventory.gpus if gpu.minor not in self._gpus]
        for gpu in inventory.gpus:
            self._gpus[gpu.minor] = gpu_entity(gpu.minor, gpu.uuid)
            self._bus_ids[gpu.minor] = gpu.pci_bus_id
        self._migs = {(d.parent_minor, d.gi_id, d.ci_id): d for d in inventory.mig_devices}
        return new

    def remember(self, minor: int, entity: EntityRef) -> bool:
        """Adds a GPU known from elsewhere (the ledger of a previous run); True when it was unknown."""
        if minor in self._gpus or entity.kind != "gpu":
            return False
        self._gpus[minor] = entity
        return True

    def gpu(self, minor: int, uuid: str = "") -> EntityRef:
        """The GPU's entity; a GPU not seen yet is named from the report itself."""
        known = self._gpus.get(minor)
        if known is not None:
            return known
        return gpu_entity(minor, uuid or f"{self.node}/{gpu_device_name(minor)}")

    def bus_id(self, minor: int) -> str | None:
        """The GPU's PCI function, as the last inventory that listed it said."""
        return self._bus_ids.get(minor)

    def mig(self, minor: int, gi_id: int, ci_id: int) -> EntityRef | None:
        device = self._migs.get((minor, gi_id, ci_id))
        return None if device is None else mig_entity(device)

    def minors(self) -> list[int]:
        return sorted(self._gpus)

    def gpus(self) -> tuple[EntityRef, ...]:
        return tuple(self._gpus[minor] for minor in self.minors())
