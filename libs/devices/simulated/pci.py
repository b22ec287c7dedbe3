"""The simulated node's PCI functions in sysfs and /dev/vfio, and a kernel that answers writes to them as Linux does.

Passthrough to VMs is driven through sysfs (``libs.devices.pci``); for it to run in CI and demos, the simulated
machine has the same files under its state directory that a GPU node has under ``/sys`` and ``/dev``:

    sys/devices/<pcie_root>/<root port>/<bdf>/   vendor, class, numa_node, driver_override,
                                                 iommu_group -> kernel/iommu_groups/<N>, driver -> bus/pci/drivers/<d>
    sys/bus/pci/devices/<bdf>                    -> the function's directory
    sys/bus/pci/drivers/{nvidia,vfio-pci,snd_hda_intel}/{bind,unbind}, sys/bus/pci/drivers_probe
    sys/kernel/iommu_groups/<N>/devices/<bdf>    -> the function's directory
    dev/vfio/vfio                                the container node; dev/vfio/<N> while group N is on vfio-pci

``SimulatedPciSysfs.write`` is the kernel: the override, unbind and probe writes change the links as Linux would,
under one lock (``pci.lock``) shared by every process of the machine. Each change is one atomic step (a symlink
made or removed, a file renamed into place), and a group's node is made before the link that completes the group
and removed after the link that breaks it, so a reader never sees half a change and a process killed at any point
leaves a state a real kernel can be in. The drivers' folders hold no links back to their functions: the
function's ``driver`` link is the one record of its binding.

Two faults, each a marker file any process may create or remove (``hold_unbind`` ... ``mark_idle``):
``pci-faults/unbind-hangs/<bdf>`` makes every unbind of the function block until the marker is gone, and
``pci-faults/in-use/<bdf>`` does so for its unbind from nvidia only, as a process holding the GPU does.
"""

import contextlib
import errno
import os
import re
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import msgspec

from libs.devices.errors import PciError
from libs.devices.model import Gpu
from libs.devices.pci.binding import VFIO_PCI
from libs.devices.pci.sysfs import DEVICES, DRIVERS, DRIVERS_PROBE, IOMMU_GROUPS, UNSET_OVERRIDE, PciSysfs
from libs.devices.simulated.state import locked
from libs.files import is_temporary, remove_temporaries, temporary_for, write_atomically

SYS = "sys"
DEV = "dev"
LOCK = "pci.lock"
FAULTS = "pci-faults"
UNBIND_HANGS = "unbind-hangs"
IN_USE = "in-use"
NVIDIA = "nvidia"
AUDIO = "snd_hda_intel"
DRIVER_NAMES = (NVIDIA, VFIO_PCI, AUDIO)
NVIDIA_VENDOR = 0x10DE
GPU_CLASS = 0x030200
AUDIO_CLASS = 0x040300
HOLD_POLL_INTERVAL = 0.01
"""How often a blocked unbind looks at its marker: short, so a released unbind finishes at once."""

_OVERRIDE = re.compile(rf"{DEVICES}/([^/]+)/driver_override")
_UNBIND = re.compile(rf"{DRIVERS}/([^/]+)/unbind")


class Function(msgspec.Struct, frozen=True, kw_only=True):
    """One PCI function as it is laid out: where, what, and the driver it starts on."""

    bdf: str
    parent: str
    """Its folder's parent under ``sys``: the root port above it, under its root complex."""
    pci_class: int
    numa_node: int
    iommu_group: int | None
    driver: str


def functions_of(gpus: Sequence[Gpu], *, audio_functions: bool) -> list[Function]:
    """Each GPU's function ``.0`` on nvidia and, with ``audio_functions``, its ``.1`` on snd_hda_intel in the same
    IOMMU group, the case where a VM must take a second endpoint with the GPU. A GPU without an IOMMU group (a
    machine created before groups were simulated) gets no ``iommu_group`` link, as on a host with the IOMMU off."""
    functions = []
    for gpu in gpus:
        root = gpu.pcie_root or f"pci{gpu.pci_bus_id[:4]}:00"
        kinds = [(gpu.pci_bus_id, GPU_CLASS, NVIDIA)]
        if audio_functions:
            kinds.append((f"{gpu.pci_bus_id[:-1]}1", AUDIO_CLASS, AUDIO))
        functions += [
            Function(
                bdf=bdf,
                parent=f"devices/{root}/{root.removeprefix('pci')}:01.0",
                pci_class=pci_class,
                numa_node=-1 if gpu.numa_node is None else gpu.numa_node,
                iommu_group=gpu.iommu_group,
                driver=driver,
            )
            for bdf, pci_class, driver in kinds
        ]
    return functions


def default_driver(vendor: int, pci_class: int) -> str | None:
    """The driver a probe picks without an override, as the module aliases of a GPU node pick it."""
    if pci_class >> 8 == AUDIO_CLASS >> 8:
        return AUDIO
    if vendor == NVIDIA_VENDOR and pci_class >> 16 == GPU_CLASS >> 16:
        return NVIDIA
    return None


def lay_out(state_dir: Path, gpus: Sequence[Gpu], *, audio_functions: bool) -> None:
    """Creates what is missing of the tree. A function's folder appears whole (built aside, renamed into place) and
    only once, so laying out again never rebinds a function that was moved since; the lock keeps two processes
    from building the same one."""
    sys_root = state_dir / SYS
    with locked(state_dir / LOCK):
        for name in DRIVER_NAMES:
            (sys_root / DRIVERS / name).mkdir(parents=True, exist_ok=True)
            for attribute in ("bind", "unbind"):
                (sys_root / DRIVERS / name / attribute).touch(mode=0o200)
        (sys_root / DEVICES).mkdir(parents=True, exist_ok=True)
        (sys_root / DRIVERS_PROBE).touch(mode=0o200)
        for function in functions_of(gpus, audio_functions=audio_functions):
            _lay_out_function(sys_root, function)
        (state_dir / DEV / "vfio").mkdir(parents=True, exist_ok=True)
        (state_dir / DEV / "vfio/vfio").touch(mode=0o600)


def _lay_out_function(sys_root: Path, function: Function) -> None:
    folder = sys_root / function.parent / function.bdf
    group = sys_root / IOMMU_GROUPS / str(function.iommu_group) if function.iommu_group is not None else None
    if folder.exists():
        remove_temporaries(folder)  # of an override write killed half-way
    else:
        _sweep(folder.parent)
        building = temporary_for(folder)
        _build(building, folder, function, sys_root / DRIVERS / function.driver, group)
        os.rename(building, folder)
    _link(sys_root / DEVICES / function.bdf, folder)
    if group is not None:
        (group / "devices").mkdir(parents=True, exist_ok=True)
        _link(group / "devices" / function.bdf, folder)


def _build(building: Path, folder: Path, function: Function, driver: Path, group: Path | None) -> None:
    """The function's folder at ``building``, with links that resolve once it is renamed to ``folder``."""
    building.mkdir(parents=True)
    attributes = {
        "vendor": f"0x{NVIDIA_VENDOR:04x}",
        "class": f"0x{function.pci_class:06x}",
        "numa_node": str(function.numa_node),
        "driver_override": UNSET_OVERRIDE,
    }
    for name, value in attributes.items():
        (building / name).write_text(f"{value}\n")
    if group is not None:
        os.symlink(os.path.relpath(group, folder), building / "iommu_group")
    os.symlink(os.path.relpath(driver, folder), building / "driver")


def _link(link: Path, target: Path) -> None:
    with contextlib.suppress(FileExistsError):
        os.symlink(os.path.relpath(target, link.parent), link)


def _sweep(folder: Path) -> None:
    """Removes what a lay-out killed half-way left (under the lock: nobody else is building)."""
    if not folder.is_dir():
        return
    for entry in folder.iterdir():
        if is_temporary(entry.name):
            shutil.rmtree(entry, ignore_errors=True)


class SimulatedPciSysfs(PciSysfs):
    """The simulated node's sysfs, read as a host's is, and written through a simulated kernel."""

    def __init__(self, state_dir: Path, *, node: str) -> None:
        super().__init__(state_dir / SYS, state_dir / DEV, node=node)
        self.state_dir = state_dir

    def write(self, relative_path: str, text: str) -> None:
        """Raises OSError with the errno Linux gives: ENODEV for a function that is not there or not bound to the
        driver named, EINVAL for an override that is no driver's name."""
        value = text.strip()
        if match := _OVERRIDE.fullmatch(relative_path):
            self._set_override(match.group(1), value)
        elif match := _UNBIND.fullmatch(relative_path):
            self._unbind(value, match.group(1))
        elif relative_path == DRIVERS_PROBE:
            self._probe(value)
        else:
            raise OSError(errno.EPERM, f"the simulated kernel does not model writes to {relative_path}")

    def hold_unbind(self, bdf: str) -> None:
        """Every unbind of the function blocks from now until ``release_unbind``: a driver stuck in its remove."""
        self._mark(UNBIND_HANGS, bdf, present=True)

    def release_unbind(self, bdf: str) -> None:
        self._mark(UNBIND_HANGS, bdf, present=False)

    def mark_in_use(self, bdf: str, pids: Sequence[int] = (1,)) -> None:
        """Processes (``pids``) use the GPU: its unbind from nvidia blocks until ``mark_idle``, as nvidia's does."""
        self._mark(IN_USE, bdf, present=True)
        (self.state_dir / FAULTS / IN_USE / self.device_dir(bdf).name).write_text(" ".join(map(str, pids)))

    def users(self, bdf: str) -> tuple[int, ...]:
        """The PIDs ``mark_in_use`` gave, as the driver would list the GPU's processes."""
        try:
            text = (self.state_dir / FAULTS / IN_USE / self.device_dir(bdf).name).read_text()
        except FileNotFoundError:
            return ()
        return tuple(int(pid) for pid in text.split())

    def mark_idle(self, bdf: str) -> None:
        self._mark(IN_USE, bdf, present=False)

    def _set_override(self, bdf: str, driver: str) -> None:
        try:
            self.checked_driver(driver or None)
        except PciError:
            raise OSError(errno.EINVAL, f"{driver!r} is not a driver's name") from None
        with self._kernel():
            folder = self._function(bdf)
            remove_temporaries(folder)
            content = f"{driver or UNSET_OVERRIDE}\n".encode()
            write_atomically(folder / "driver_override", content, mode=0o644, parent_mode=None, durable=False)
            self._sync_group_node(bdf)

    def _unbind(self, bdf: str, driver: str) -> None:
        self._require_bound(bdf, driver)
        self._wait_while_held(bdf, driver)
        with self._kernel():
            self._require_bound(bdf, driver)
            os.unlink(self._function(bdf) / "driver")
            self._sync_group_node(bdf)

    def _probe(self, bdf: str) -> None:
        """No driver that matches leaves the function unbound without an error, as drivers_probe does."""
        with self._kernel():
            folder = self._function(bdf)
            if self.driver_of(bdf) is not None:
                return
            driver = self.override_of(bdf) or default_driver(self.vendor_of(bdf), self.class_of(bdf))
            if driver is None or not (self.sys_root / DRIVERS / driver).is_dir():
                return
            self._sync_group_node(bdf, binding=driver)
            os.symlink(os.path.relpath(self.sys_root / DRIVERS / driver, folder), folder / "driver")

    def _sync_group_node(self, bdf: str, *, binding: str | None = None) -> None:
        """``dev/vfio/<N>`` exists exactly while every function of the group is on vfio-pci, counting ``bdf`` as on
        ``binding`` when it is about to be bound. Called before a bind's link and after an unbind's, and after any
        override write, so a node a killed kernel call left is put right by the next write to its group."""
        group = self.iommu_group_of(bdf)
        if group is None:
            return
        drivers = {member: self.driver_of(member) for member in self.group_members(group)}
        if binding is not None:
            drivers[bdf] = binding
        node = self.group_node(group)
        if all(driver == VFIO_PCI for driver in drivers.values()):
            node.touch(mode=0o600)
        else:
            node.unlink(missing_ok=True)

    def _require_bound(self, bdf: str, driver: str) -> None:
        self._function(bdf)
        if self.driver_of(bdf) != driver:
            raise OSError(errno.ENODEV, f"{bdf} is not bound to {driver}")

    def _wait_while_held(self, bdf: str, driver: str) -> None:
        """Polls the markers: their removal, by any process, has no event a plain thread can wait on."""
        faults = self.state_dir / FAULTS
        while (faults / UNBIND_HANGS / bdf).exists() or (driver == NVIDIA and (faults / IN_USE / bdf).exists()):
            time.sleep(HOLD_POLL_INTERVAL)

    def _function(self, bdf: str) -> Path:
        """The function's folder, found by name as the kernel finds it: ENODEV when there is none."""
        try:
            return self.device_dir(bdf).resolve()
        except PciError:
            raise OSError(errno.ENODEV, os.strerror(errno.ENODEV)) from None

    def _mark(self, fault: str, bdf: str, *, present: bool) -> None:
        marker = self.state_dir / FAULTS / fault / self.device_dir(bdf).name
        if present:
            marker.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            marker.touch()
        else:
            marker.unlink(missing_ok=True)

    def _kernel(self) -> contextlib.AbstractContextManager[None]:
        return locked(self.state_dir / LOCK)
