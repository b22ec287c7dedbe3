"""A GPU's PCI topology from sysfs: NUMA node, PCIe root complex and IOMMU group.

NVML reports none of the root complex and the IOMMU group, and its NUMA call is missing on older drivers; sysfs
has all three for any PCI function (read through ``libs.devices.pci``). A GPU NVML lists but sysfs does not show
(a container without the host's /sys, a hand-made test tree) has none of them rather than failing discovery. The
sysfs root is a parameter so tests can point it at a temporary tree.
"""

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from libs.devices.errors import PciError
from libs.devices.pci import PciSysfs

T = TypeVar("T")


def sysfs_bus_id(nvml_bus_id: str) -> str:
    """NVML's `00000000:07:00.0` as sysfs and Kubernetes write it: `0000:07:00.0` (extended BDF, lowercase)."""
    domain, rest = nvml_bus_id.strip().lower().split(":", 1)
    return f"{int(domain, 16):04x}:{rest}"


def numa_node(sysfs_root: Path, bus_id: str) -> int | None:
    """None when the platform has no NUMA affinity for the device (the kernel writes -1) or says nothing."""
    return _unless_absent(PciSysfs(sysfs_root).numa_node_of, bus_id)


def pcie_root(sysfs_root: Path, bus_id: str) -> str | None:
    """`pci<domain>:<bus>` of the root complex above the device, from the device's resolved sysfs path."""
    return _unless_absent(PciSysfs(sysfs_root).pcie_root_of, bus_id)


def iommu_group(sysfs_root: Path, bus_id: str) -> int | None:
    """None without an IOMMU (or with it off): such a GPU cannot be passed through to a VM."""
    return _unless_absent(PciSysfs(sysfs_root).iommu_group_of, bus_id)


def _unless_absent(read: Callable[[str], T | None], bus_id: str) -> T | None:
    try:
        return read(bus_id)
    except PciError:
        return None
