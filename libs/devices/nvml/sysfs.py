"""PCI topology from sysfs: NUMA node and PCIe root complex of a GPU.

NVML does not report the root complex, and its NUMA call is missing on older drivers; sysfs has both for
any PCI device. The sysfs root is a parameter so tests can point it at a temporary tree.
"""

import re
from pathlib import Path

_ROOT_COMPLEX = re.compile(r"^pci[0-9a-f]{4}:[0-9a-f]{2}$")


def sysfs_bus_id(nvml_bus_id: str) -> str:
    """NVML's `00000000:07:00.0` as sysfs and Kubernetes write it: `0000:07:00.0` (extended BDF, lowercase)."""
    domain, rest = nvml_bus_id.strip().lower().split(":", 1)
    return f"{int(domain, 16):04x}:{rest}"


def numa_node(sysfs_root: Path, bus_id: str) -> int | None:
    """None when the platform has no NUMA affinity for the device (the kernel writes -1) or says nothing."""
    try:
        value = int((sysfs_root / "bus/pci/devices" / bus_id / "numa_node").read_text())
    except (FileNotFoundError, ValueError):
        return None
    return value if value >= 0 else None


def pcie_root(sysfs_root: Path, bus_id: str) -> str | None:
    """`pci<domain>:<bus>` of the root complex above the device, from the device's resolved sysfs path."""
    device = sysfs_root / "bus/pci/devices" / bus_id
    if not device.exists():
        return None
    return next((part for part in device.resolve().parts if _ROOT_COMPLEX.match(part)), None)
