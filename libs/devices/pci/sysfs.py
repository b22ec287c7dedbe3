"""The node's PCI functions as sysfs shows them: drivers, driver overrides, IOMMU groups, topology.

The one place that knows sysfs paths, so the same code reads and drives a real host's ``/sys`` and a simulated
node's tree (``libs.devices.simulated.pci``): the roots are parameters, and every change goes through one
primitive, ``write``, which the simulated kernel overrides. Bus ids and driver names are checked before they
become part of a path, so nothing a claim or a profile carries can reach another file.
"""

import os
import re
from pathlib import Path

from libs.devices.errors import PciError

DEVICES = "bus/pci/devices"
DRIVERS = "bus/pci/drivers"
DRIVERS_PROBE = "bus/pci/drivers_probe"
IOMMU_GROUPS = "kernel/iommu_groups"
UNSET_OVERRIDE = "(null)"
"""What the kernel shows in ``driver_override`` when none is set."""

_BDF = re.compile(r"[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]")
_DRIVER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_ROOT_COMPLEX = re.compile(r"pci[0-9a-f]{4}:[0-9a-f]{2}")


class PciSysfs:
    """Reads raise ``PciError`` naming the function when sysfs has no such function or group; an attribute the
    function lacks (no driver, no IOMMU, no NUMA affinity) reads as None."""

    def __init__(self, sys_root: Path, dev_root: Path = Path("/dev"), *, node: str = "") -> None:
        self.sys_root = sys_root
        self.dev_root = dev_root
        self.node = node or os.uname().nodename

    def driver_of(self, bdf: str) -> str | None:
        return _link_name(self.device_dir(bdf) / "driver")

    def override_of(self, bdf: str) -> str | None:
        value = (self.device_dir(bdf) / "driver_override").read_text().strip()
        return value if value and value != UNSET_OVERRIDE else None

    def iommu_group_of(self, bdf: str) -> int | None:
        name = _link_name(self.device_dir(bdf) / "iommu_group")
        return int(name) if name is not None else None

    def group_members(self, group: int) -> tuple[str, ...]:
        """The group's functions, sorted: VFIO hands a VM whole groups only."""
        try:
            names = os.listdir(self._group_dir(group) / "devices")
        except FileNotFoundError:
            raise PciError(self.node, f"iommu group {group}", f"no such IOMMU group under {self.sys_root}") from None
        return tuple(sorted(names))

    def vendor_of(self, bdf: str) -> int:
        return int((self.device_dir(bdf) / "vendor").read_text(), 16)

    def class_of(self, bdf: str) -> int:
        """The 24-bit class code: ``0x030200`` a 3D controller (a datacenter GPU), ``0x040300`` an audio function."""
        return int((self.device_dir(bdf) / "class").read_text(), 16)

    def numa_node_of(self, bdf: str) -> int | None:
        """None when the platform has no NUMA affinity for the function (the kernel writes -1) or says nothing."""
        try:
            value = int((self.device_dir(bdf) / "numa_node").read_text())
        except (FileNotFoundError, ValueError):
            return None
        return value if value >= 0 else None

    def pcie_root_of(self, bdf: str) -> str | None:
        """``pci<domain>:<bus>`` of the root complex above the function, from its resolved sysfs path."""
        return next((part for part in self.device_dir(bdf).resolve().parts if _ROOT_COMPLEX.fullmatch(part)), None)

    def group_node(self, group: int) -> Path:
        """``/dev/vfio/<group>``: present once every endpoint of the group is on vfio-pci."""
        return self.dev_root / "vfio" / str(self._checked_group(group))

    def driver_loaded(self, driver: str) -> bool:
        """Whether the kernel has the driver (``modprobe vfio-pci`` loads the one VMs need)."""
        return (self.sys_root / "bus/pci/drivers" / self.checked_driver(driver)).is_dir()

    def vm_groups(self) -> frozenset[int]:
        """The IOMMU groups whose ``/dev/vfio/<group>`` exists: those a VM can have (one directory listing)."""
        try:
            names = os.listdir(self.dev_root / "vfio")
        except FileNotFoundError:
            return frozenset()
        return frozenset(int(name) for name in names if name.isascii() and name.isdigit())

    def container_node(self) -> Path:
        """``/dev/vfio/vfio``: present while vfio-pci is loaded; a VM needs it beside its groups' nodes."""
        return self.dev_root / "vfio/vfio"

    def set_override(self, bdf: str, driver: str | None) -> None:
        """Only ``driver`` may bind the function from now on; None clears it (an empty line, as the kernel wants)."""
        self._write(bdf, f"{DEVICES}/{self.checked_bdf(bdf)}/driver_override", f"{self.checked_driver(driver)}\n")

    def unbind(self, bdf: str, driver: str) -> None:
        """Blocks as long as the kernel does: nvidia's unbind waits for every process using the GPU to let go."""
        self._write(bdf, f"{DRIVERS}/{self.checked_driver(driver)}/unbind", self.checked_bdf(bdf))

    def probe(self, bdf: str) -> None:
        """Asks the kernel to bind an unbound function: to its override if one is set, else to its default driver."""
        self._write(bdf, DRIVERS_PROBE, self.checked_bdf(bdf))

    def write(self, relative_path: str, text: str) -> None:
        """One write(2) of ``text``: a sysfs attribute acts on each write call, and a partial one would be
        another request. Raises the kernel's OSError."""
        fd = os.open(self.sys_root / relative_path, os.O_WRONLY)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)

    def device_dir(self, bdf: str) -> Path:
        path = self.sys_root / DEVICES / self.checked_bdf(bdf)
        if not path.exists():
            raise PciError(self.node, bdf, f"no such PCI function under {self.sys_root}")
        return path

    def checked_bdf(self, bdf: str) -> str:
        """``bdf`` if it is a lowercase extended bus id (``0000:17:00.0``); anything else never becomes a path."""
        if not _BDF.fullmatch(bdf):
            raise PciError(self.node, repr(bdf), "not a PCI bus id like 0000:17:00.0")
        return bdf

    def checked_driver(self, driver: str | None) -> str:
        """A driver's name (``vfio-pci``, ``snd_hda_intel``), or '' for None; nothing path-like."""
        if driver is not None and not _DRIVER.fullmatch(driver):
            raise PciError(self.node, repr(driver), "not a kernel driver name")
        return driver or ""

    def _group_dir(self, group: int) -> Path:
        return self.sys_root / IOMMU_GROUPS / str(self._checked_group(group))

    def _checked_group(self, group: int) -> int:
        if group < 0:
            raise PciError(self.node, f"iommu group {group!r}", "not an IOMMU group number")
        return group

    def _write(self, bdf: str, relative_path: str, text: str) -> None:
        try:
            self.write(relative_path, text)
        except OSError as error:
            raise PciError(
                self.node, bdf, f"writing {text.strip()!r} to {relative_path} failed: {error.strerror or error}"
            ) from error


def _link_name(link: Path) -> str | None:
    """The last component of a sysfs link's target (``driver`` -> ``.../drivers/nvidia``): None when absent."""
    try:
        return os.path.basename(os.readlink(link))
    except FileNotFoundError:
        return None
