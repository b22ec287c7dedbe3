"""The devices one GPU contributes to its pool, per MIG mode.

- Static MIG (the default): a GPU with MIG mode on offers the MIG devices that exist on it and not
  itself; a GPU with MIG off offers itself.
- Dynamic MIG: a GPU with MIG mode on offers itself and every profile x placement as a partition, all
  consuming from its counter set; the MIG device is created when a claim is prepared. MIG mode itself is
  never switched (that needs a GPU reset), so a GPU with MIG off still offers only itself.

With ``shared`` (discovery's ``consumable_capacity``), a GPU with MIG off offers itself as shareable
(``libs.slices.sharing``); a GPU with MIG on is partitioned by MIG instead and is never shared this way. A GPU
with MIG off that ``passthrough`` names also offers itself to VMs (``libs.slices.passthrough``).
"""

import enum
from dataclasses import dataclass, field
from typing import Any

from libs.devices.model import Gpu, Inventory, MigDevice, MigPlacement, MigProfile
from libs.slices import counters
from libs.slices.attributes import (
    Attributes,
    gpu_attributes,
    gpu_capacity,
    mig_attributes,
    mig_capacity,
    shared_attributes,
)
from libs.slices.passthrough import NO_PASSTHROUGH, PassthroughGpus, passthrough_devices
from libs.slices.sharing import shareable

Device = dict[str, Any]


class MigMode(enum.StrEnum):
    STATIC = "static"
    DYNAMIC = "dynamic"


@dataclass
class GpuGroup:
    """A GPU's devices and, in dynamic MIG, the counter set they share (which must travel with them)."""

    minor: int
    devices: list[Device]
    counter_set: dict[str, Any] | None = field(default=None)


def gpu_group(
    inventory: Inventory,
    gpu: Gpu,
    mode: MigMode,
    *,
    shared_gpus: bool = False,
    passthrough: PassthroughGpus = NO_PASSTHROUGH,
) -> GpuGroup:
    profiles = inventory.profiles_for(gpu)
    shared = shared_attributes(gpu)
    if not gpu.mig_enabled:
        whole = full_gpu(gpu, shared)
        whole = shareable(whole, gpu.memory_bytes) if shared_gpus else whole
        if passthrough.offers(gpu):
            devices, counter_set = passthrough_devices(gpu, whole, shared, inventory.confidential_computing)
            return GpuGroup(gpu.minor, devices, counter_set)
        return GpuGroup(gpu.minor, [whole])
    if mode is MigMode.STATIC:
        return GpuGroup(gpu.minor, [static_mig(gpu, mig, shared) for mig in inventory.mig_devices_of(gpu)])
    if not profiles:
        return GpuGroup(gpu.minor, [full_gpu(gpu, shared)])
    whole = full_gpu(gpu, shared) | {"consumesCounters": counters.whole_gpu_consumption(gpu, profiles)}
    parts = [partition(gpu, p, placement, shared) for p in profiles for placement in p.placements]
    return GpuGroup(gpu.minor, [whole, *parts], counters.counter_set(gpu, profiles))


def full_gpu(gpu: Gpu, shared: Attributes) -> Device:
    return {"name": gpu.name, "attributes": gpu_attributes(gpu, shared), "capacity": gpu_capacity(gpu)}


def static_mig(gpu: Gpu, mig: MigDevice, shared: Attributes) -> Device:
    return {
        "name": mig.name,
        "attributes": mig_attributes(mig.name, gpu, mig.profile, mig.uuid, shared),
        "capacity": mig_capacity(mig.profile),
    }


def partition(gpu: Gpu, profile: MigProfile, placement: MigPlacement, shared: Attributes) -> Device:
    name = profile.device_name(gpu.minor, placement.start)
    return {
        "name": name,
        "attributes": mig_attributes(name, gpu, profile, None, shared),
        "capacity": mig_capacity(profile),
        "consumesCounters": counters.partition_consumption(gpu.minor, profile, placement),
    }
