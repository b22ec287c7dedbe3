"""The one interface every device backend offers (NVML on real machines, simulated everywhere else).

Services depend on this Protocol only, so the same discovery, claim preparation and health code runs on a
DGX and on a laptop. Methods are async because real GPU operations block (MIG creation takes seconds,
event waits block indefinitely); backends move that work off the event loop.
"""

from collections.abc import AsyncIterator
from typing import Protocol

from libs.devices.events import DeviceEvent
from libs.devices.model import HealthCounters, Inventory, MigDevice, MpsSettings, TimeSliceInterval
from libs.devices.pci import PciSysfs


class DeviceBackend(Protocol):
    @property
    def name(self) -> str:
        """`nvml` or `simulated`, as in Inventory.backend."""
        ...

    @property
    def node(self) -> str: ...

    async def inventory(self) -> Inventory:
        """Reads what is there now; a GPU that fails mid-read is left out and logged, not raised."""
        ...

    async def create_mig_device(self, parent_minor: int, profile_name: str, placement_start: int) -> MigDevice:
        """Creates a GPU instance at the placement and one compute instance spanning it."""
        ...

    async def destroy_mig_device(self, device: MigDevice) -> None:
        """Destroys the compute and GPU instance; a device that is already gone is not an error."""
        ...

    async def set_time_slice(self, minor: int, interval: TimeSliceInterval) -> None: ...

    async def start_mps(self, minor: int, settings: MpsSettings) -> None:
        """Puts the GPU in the state an MPS daemon needs (exclusive-process compute mode)."""
        ...

    async def stop_mps(self, minor: int) -> None: ...

    async def reset_gpu(self, minor: int) -> None:
        """Resets the GPU; its MIG devices and sharing settings are gone afterwards."""
        ...

    async def processes(self, minor: int) -> tuple[int, ...]:
        """The PIDs of the processes using the GPU (the driver's compute and graphics processes): a VM cannot
        take a GPU while they hold it."""
        ...

    async def read_counters(self, minor: int) -> HealthCounters: ...

    def pci(self) -> PciSysfs:
        """The node's PCI functions and IOMMU groups in sysfs and /dev/vfio, for passing GPUs to VMs
        (``libs.devices.pci``): the host's on NVML, the machine's own tree on the simulated backend."""
        ...

    def events(self) -> AsyncIterator[DeviceEvent]:
        """A new subscription that starts now: it yields events that happen after this call returns."""
        ...

    async def close(self) -> None: ...
