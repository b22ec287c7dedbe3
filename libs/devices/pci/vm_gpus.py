"""GPUs a VM holds, kept in the inventory although the driver no longer lists them.

A GPU whose function is on vfio-pci belongs to the VM's kernel: the host's driver lets go of it and NVML stops
listing it. Left at that, every reader of the inventory would see the GPU vanish while a claim holds it:
discovery would unpublish it, a second claim of it would fail as "no such device" rather than "held by the VM's
claim". So each backend passes its listing through ``VmGpus.merge``: a GPU this process has seen listed before,
now missing, whose function sysfs shows on vfio-pci, stays in with what the driver last said of it. A process that
starts while a VM holds a GPU has not seen it and leaves it out until the VM gives it back.
"""

from __future__ import annotations

from collections.abc import Sequence

from libs.devices.errors import PciError
from libs.devices.model import Gpu
from libs.devices.pci.binding import VFIO_PCI
from libs.devices.pci.sysfs import PciSysfs


class VmGpus:
    def __init__(self) -> None:
        self._seen: dict[str, Gpu] = {}

    def merge(self, listed: Sequence[Gpu], pci: PciSysfs) -> tuple[Gpu, ...]:
        """``listed`` with the GPUs a VM holds added back, in index order; remembers what ``listed`` says."""
        for gpu in listed:
            self._seen[gpu.pci_bus_id] = gpu
        present = {gpu.pci_bus_id for gpu in listed}
        held = [gpu for bus_id, gpu in self._seen.items() if bus_id not in present and _on_vfio(pci, bus_id)]
        if not held:
            return tuple(listed)
        return tuple(sorted([*listed, *held], key=lambda gpu: gpu.index))


def _on_vfio(pci: PciSysfs, bus_id: str) -> bool:
    try:
        return pci.driver_of(bus_id) == VFIO_PCI
    except PciError:
        return False  # gone from the bus: not a VM's, a lost GPU
