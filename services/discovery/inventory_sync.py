"""Deciding what changed between two inventories of one node, and why: pure functions, no I/O.

NVML says what is there, never why it changed, so the reason an ``InventoryChanged`` event carries is read from
the difference itself. When several things changed at once the reason is the one a consumer most needs to act
on: a driver reload (everything may differ) over a lost GPU (claims on it are broken) over a GPU that came back
over a MIG reconfiguration; a difference in nothing but details (fabric, profile tables) is a resync's finding.
"""

from __future__ import annotations

import msgspec

from libs.devices.events import DeviceEvent, GpuLostEvent, XidEvent
from libs.devices.model import Gpu, Inventory, MigDevice
from libs.events.catalogue.inventory import InventoryReason

XID_FALLEN_OFF_THE_BUS = 79
"""The driver's XID when a GPU stops answering on PCIe; NVML may report it before (or instead of) GPU lost."""


class InventoryChange(msgspec.Struct, frozen=True, kw_only=True):
    """What an ``InventoryChanged`` event says besides the node and generation."""

    reason: InventoryReason
    added: list[str] = msgspec.field(default_factory=list)
    removed: list[str] = msgspec.field(default_factory=list)
    changed: list[str] = msgspec.field(default_factory=list)


def devices_by_name(inventory: Inventory) -> dict[str, Gpu | MigDevice]:
    """Every device of the inventory under its published name (``gpu-3``, ``gpu-3-mig-1g10gb-19-6``)."""
    devices: dict[str, Gpu | MigDevice] = {gpu.name: gpu for gpu in inventory.gpus}
    devices.update((mig.name, mig) for mig in inventory.mig_devices)
    return devices


def device_count(inventory: Inventory) -> int:
    return len(inventory.gpus) + len(inventory.mig_devices)


def inventory_change(old: Inventory | None, new: Inventory, *, starting: bool = False) -> InventoryChange | None:
    """The change from ``old`` (None: nothing known yet) to ``new``; None when nothing changed.

    ``starting`` always yields a change with reason ``start``: a restarted service announces itself even when
    the inventory is the one it left in the bucket, so a consumer that missed the last event catches up.
    """
    if old is not None and not starting and old.content_hash() == new.content_hash():
        return None
    before = devices_by_name(old) if old is not None else {}
    after = devices_by_name(new)
    added = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    changed = sorted(name for name in set(before) & set(after) if before[name] != after[name])
    reason: InventoryReason = "start" if starting or old is None else change_reason(old, new, added, removed, changed)
    return InventoryChange(reason=reason, added=added, removed=removed, changed=changed)


def change_reason(
    old: Inventory, new: Inventory, added: list[str], removed: list[str], changed: list[str]
) -> InventoryReason:
    """Why ``old`` became ``new``, by precedence (see the module docstring)."""
    if (old.driver_version, old.cuda_driver_version) != (new.driver_version, new.cuda_driver_version):
        return "driver-reload"
    old_gpus, new_gpus = {g.name for g in old.gpus}, {g.name for g in new.gpus}
    if old_gpus - new_gpus:
        return "device-lost"
    if new_gpus - old_gpus:
        return "device-back"
    if added or removed or _mig_mode_flipped(old, new, changed):
        return "mig-reconfigured"
    return "resync"


def _mig_mode_flipped(old: Inventory, new: Inventory, changed: list[str]) -> bool:
    before = {g.name: g.mig_enabled for g in old.gpus}
    return any(before.get(g.name, g.mig_enabled) != g.mig_enabled for g in new.gpus if g.name in changed)


def rereads_inventory(event: DeviceEvent) -> bool:
    """Whether a hardware event may have changed the inventory, so it is worth reading again now.

    Only GPU-lost signs qualify: ECC and most XIDs are the health service's business and leave the device list
    as it is, and an XID storm must not turn into a storm of full NVML discoveries.
    """
    if isinstance(event, GpuLostEvent):
        return True
    return isinstance(event, XidEvent) and event.xid == XID_FALLEN_OFF_THE_BUS
