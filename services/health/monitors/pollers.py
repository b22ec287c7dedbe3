"""Counter pollers: one per GPU, reading its health counters at an interval and reporting what changed.

One per GPU rather than one for the node, so a GPU whose NVML calls hang makes only that GPU unmonitored.
A read that says the GPU is lost (or gone from the bus) is an answer, not a crash: it raises the GPU-lost
condition, and the first read that works again clears it. Any other read error is a crash (the watchdog
reports it and restarts the poller). The rules themselves are pure (``counter_rules``).

A GPU handed to a VM (its function on vfio-pci, or on its way there: the override says vfio-pci) is the VM's:
the host's driver lets go of it and NVML loses it, which is no fault. Its poller reads nothing then, reports
the informational ``passthrough``/``vm`` condition instead (which ``gpudra health status`` shows, and which
neither taints nor remediates), withdraws a GPU-lost the hand-over caused, and leaves its other conditions as
they were: nobody can read them until the VM gives the GPU back.
"""

from __future__ import annotations

import asyncio

from libs.devices import DeviceBackend
from libs.devices.errors import DeviceError, DeviceLost, DeviceNotFound, PciError
from libs.devices.model import HealthCounters
from libs.devices.names import gpu_device_name
from libs.devices.pci import VFIO_PCI
from libs.events.catalogue.health import EntityRef
from services.health.monitors.conditions import CHECK_PASSTHROUGH, POLLER_CHECKS, Condition
from services.health.monitors.counter_rules import Thresholds, assess, compare
from services.health.monitors.entities import EntityMap
from services.health.monitors.event_stream import gpu_lost_condition
from services.health.monitors.gpu_reset import GpuLocks
from services.health.monitors.reporter import Reporter
from services.health.monitors.watchdog import Heartbeat


def poller_name(minor: int) -> str:
    return f"counters/{gpu_device_name(minor)}"


def passthrough_condition(minor: int, entity: EntityRef) -> Condition:
    return Condition(
        check=CHECK_PASSTHROUGH,
        component="gpu",
        entity=entity,
        code="vm",
        minor=minor,
        message=f"{entity.device} is with a VM (bound to vfio-pci): its driver is the VM's, so NVML does not watch it",
    )


class CounterPoller:
    def __init__(
        self,
        backend: DeviceBackend,
        reporter: Reporter,
        entities: EntityMap,
        locks: GpuLocks,
        minor: int,
        *,
        interval: float,
        thresholds: Thresholds,
    ) -> None:
        self._backend = backend
        self._reporter = reporter
        self._entities = entities
        self._locks = locks
        self.minor = minor
        self._interval = interval
        self._thresholds = thresholds

    async def run(self, beat: Heartbeat) -> None:
        """Reads, says it answered, judges; the previous reading makes the rate rules work."""
        previous: HealthCounters | None = None
        while True:
            reading = None if self._with_vm() else await self._read()
            beat()
            if reading is None or (isinstance(reading, DeviceError) and self._with_vm()):
                await self._hand_over()
                previous = None
            else:
                previous = await self._judge(previous, reading)
            await asyncio.sleep(self._interval)

    def _with_vm(self) -> bool:
        """Whether the GPU's function is a VM's, or being handed to one (two reads of sysfs)."""
        bus_id = self._entities.bus_id(self.minor)
        if bus_id is None:
            return False
        pci = self._backend.pci()
        try:
            return VFIO_PCI in (pci.driver_of(bus_id), pci.override_of(bus_id))
        except PciError:
            return False  # gone from the bus: a GPU lost, which the read reports

    async def _hand_over(self) -> None:
        gpu = self._entities.gpu(self.minor)
        details = self._reporter.details(self.minor, POLLER_CHECKS)
        with_vm = passthrough_condition(self.minor, gpu)
        lost = gpu_lost_condition(self.minor, gpu, "")
        await self._apply({k: v for k, v in details.items() if k in (with_vm.key, lost.key)}, [with_vm])

    async def _read(self) -> HealthCounters | DeviceError:
        """Waits for a reset of the same GPU to finish: counters read mid-reset mean nothing."""
        async with self._locks.of(self.minor):
            try:
                return await self._backend.read_counters(self.minor)
            except (DeviceLost, DeviceNotFound) as exc:
                return exc

    async def _judge(
        self, previous: HealthCounters | None, reading: HealthCounters | DeviceError
    ) -> HealthCounters | None:
        gpu = self._entities.gpu(self.minor)
        details = self._reporter.details(self.minor, POLLER_CHECKS)
        if isinstance(reading, DeviceError):
            lost = gpu_lost_condition(self.minor, gpu, reading.problem)
            await self._apply({k: v for k, v in details.items() if k == lost.key}, [lost])
            return None
        await self._apply(details, assess(previous, reading, gpu, set(details), self._thresholds))
        return reading

    async def _apply(self, details: dict[str, str], current: list[Condition]) -> None:
        transitions = compare(details, current)
        for condition in transitions.raised:
            await self._reporter.report(condition)
        for key in transitions.cleared:
            await self._reporter.clear(key)
