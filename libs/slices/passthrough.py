"""GPUs passed through to virtual machines (VFIO): the ``vfio`` device a GPU offers beside itself, pure.

A GPU the node's ``passthrough_gpus`` setting names (and that has MIG off and an IOMMU group) is published twice:
as ``gpu-<minor>`` for containers and as ``gpu-<minor>-vfio`` for VMs (KubeVirt, Kata), which claim_preparation
prepares by binding the GPU's IOMMU group to ``vfio-pci``. Both consume the one counter of the GPU's counter
set (``gpu: 1``), so the scheduler never gives the same GPU to a container and a VM at once; claim_preparation
refuses it too. A GPU with MIG on is partitioned by MIG instead and is not offered to VMs.

The ``vfio`` device carries the GPU's identity and place (UUID, product, PCI bus id, PCIe root, NUMA node), its
``iommuGroup``, the node's ``confidentialComputing`` mode where the driver reports it (``on``, ``off``,
``devtools``), and the GPU's memory as capacity, so a VM claim can select as a container claim does.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from libs.devices.model import ConfidentialComputing, Gpu
from libs.devices.names import vfio_device_name
from libs.slices.attributes import STANDARD, Attributes, Entry, encode, gpu_capacity
from libs.slices.counters import counter_set_name
from libs.slices.quantity import format_quantity

Device = dict[str, Any]
COUNTER = "gpu"
ALL = "all"
NONE = "none"

PassthroughSetting = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^(none|all|[0-9]{1,9}(,[0-9]{1,9})*)$",
        description="GPUs also offered to VMs (VFIO passthrough): none, all, or minors such as 0,3; a GPU "
        "with MIG on or without an IOMMU group is never offered",
    ),
]
"""The node's ``passthrough_gpus``: discovery publishes what it names, claim_preparation prepares only that."""


class PassthroughGpus(msgspec.Struct, frozen=True):
    """Which GPUs a node offers to VMs: every one (``all``), those with these minors, or none."""

    every: bool = False
    minors: frozenset[int] = frozenset()

    @classmethod
    def parse(cls, text: str) -> PassthroughGpus:
        """``none``, ``all`` or minors (``0,3``); ``ValueError`` saying what is wrong otherwise."""
        value = text.strip().lower()
        if value in ("", NONE):
            return cls()
        if value == ALL:
            return cls(every=True)
        minors = set()
        for part in value.split(","):
            if not part.strip().isdigit() or not part.strip().isascii():
                raise ValueError(f"{text!r}: give none, all, or GPU minor numbers separated by commas (0,3)")
            minors.add(int(part))
        return cls(minors=frozenset(minors))

    def offers(self, gpu: Gpu) -> bool:
        """Whether ``gpu`` is published for VMs: named by the setting, MIG off, and in an IOMMU group."""
        named = self.every or gpu.minor in self.minors
        return named and not gpu.mig_enabled and gpu.iommu_group is not None


NO_PASSTHROUGH = PassthroughGpus()


def passthrough_devices(
    gpu: Gpu, whole: Device, shared: Attributes, cc: ConfidentialComputing | None
) -> tuple[list[Device], dict[str, Any]]:
    """The GPU's container device and its vfio device, both consuming the GPU's one counter, and the counter set;
    ``cc`` is the node's confidential-computing mode, which a VM claim may select on."""
    consumption = [{"counterSet": counter_set_name(gpu.minor), "counters": {COUNTER: {"value": format_quantity(1)}}}]
    vfio = {
        "name": vfio_device_name(gpu.minor),
        "attributes": vfio_attributes(gpu, shared, cc),
        "capacity": gpu_capacity(gpu),
        "consumesCounters": consumption,
    }
    counter_set = {"name": counter_set_name(gpu.minor), "counters": {COUNTER: {"value": format_quantity(1)}}}
    return [whole | {"consumesCounters": consumption}, vfio], counter_set


def vfio_attributes(gpu: Gpu, shared: Attributes, cc: ConfidentialComputing | None) -> Attributes:
    name = vfio_device_name(gpu.minor)
    entries: list[Entry] = [
        ("confidentialComputing", "string", cc),
        ("type", "string", "vfio"),
        ("uuid", "string", gpu.uuid),
        ("index", "int", gpu.index),
        ("minor", "int", gpu.minor),
        ("iommuGroup", "int", gpu.iommu_group),
        (f"{STANDARD}/pciBusID", "string", gpu.pci_bus_id),
    ]
    return encode(name, entries) | shared
