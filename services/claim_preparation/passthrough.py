"""A GPU for a VM: its IOMMU group bound to vfio-pci at prepare and given back at unprepare.

Planning is pure (``plan_passthrough``: the claim's vfio devices and the endpoints of their IOMMU groups as read
beforehand, each with its driver); the plan is recorded before the first sysfs write, so a crash at any point is
undone by putting every endpoint back on the driver it had. ``Passthrough`` applies and undoes it through the
node's ``PciSysfs`` (``libs.devices.pci``), each step idempotent:

- apply: nothing while a process uses the GPU (the driver's process list); else every endpoint of the group onto
  vfio-pci (the GPU's own function and any other in its group, such as an audio function: VFIO hands a VM whole
  groups only), then a bounded wait for ``/dev/vfio/<group>``;
- undo: every endpoint back to its driver, then the GPU must be on ``nvidia`` again and in the backend's
  inventory, or the undo fails and is retried.

An unbind that does not finish (a process the list missed, a driver stuck in its remove) fails the prepare within
the timeout, naming the function and the driver. The kernel may still complete it later, so the rollback waits
for it (within the same bound) before giving anything back; if it is still pending, the record stays and the next
prepare or start gives the functions back once it has finished, rather than leaving a function on no driver.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

from libs.cdi.spec import ContainerEdits
from libs.claims.allocation import AllocatedClaim
from libs.devices import DeviceBackend
from libs.devices.model import Inventory
from libs.devices.names import vfio_device_name
from libs.devices.pci import VFIO_PCI, PciSysfs, bind_to_vfio, restore_driver, wait_for_group_node, writes_settled
from services.claim_preparation.devices import VfioTarget
from services.claim_preparation.errors import DeviceFailure
from services.claim_preparation.record import Endpoint, PassthroughPlan, PlannedDevice

VFIO_GROUP = "vfio"
"""The group of every VM device: it takes no opaque config, and no config group has this name."""
NVIDIA = "nvidia"


def vfio_groups(claim: AllocatedClaim, inventory: Inventory) -> set[int]:
    """The IOMMU groups of the GPUs the claim wants for VMs: whose endpoints must be read before planning."""
    wanted = {result.device for result in claim.results}
    return {
        gpu.iommu_group
        for gpu in inventory.gpus
        if vfio_device_name(gpu.minor) in wanted and gpu.iommu_group is not None
    }


def read_endpoints(sysfs: PciSysfs, groups: Iterable[int]) -> dict[int, tuple[Endpoint, ...]]:
    """Each group's endpoints with their drivers now (blocking: sysfs reads)."""
    return {
        group: tuple(Endpoint(bdf=bdf, driver=sysfs.driver_of(bdf)) for bdf in sysfs.group_members(group))
        for group in sorted(groups)
    }


def plan_passthrough(
    devices: Sequence[PlannedDevice], endpoints: Mapping[int, tuple[Endpoint, ...]]
) -> list[PassthroughPlan]:
    """One plan per GPU the claim takes for a VM. A function already on vfio-pci (left there by hand, or by a
    crash of an earlier gpudra) goes back to ``nvidia`` if it is the GPU, else stays: there is no other driver to
    name for it."""
    plans: dict[str, PassthroughPlan] = {}
    for device in devices:
        target = device.target
        if not isinstance(target, VfioTarget) or target.name in plans:
            continue
        members = endpoints.get(target.iommu_group, ())
        if not any(e.bdf == target.pci_bus_id for e in members):
            raise DeviceFailure(
                f"device {target.name}: IOMMU group {target.iommu_group} does not hold the GPU's function "
                f"{target.pci_bus_id} (it holds {', '.join(e.bdf for e in members) or 'nothing'})"
            )
        plans[target.name] = PassthroughPlan(
            group=VFIO_GROUP,
            gpu=target.name,
            minor=target.minor,
            bdf=target.pci_bus_id,
            iommu_group=target.iommu_group,
            endpoints=tuple(_original(e, target.pci_bus_id) for e in members),
        )
    return list(plans.values())


def _original(endpoint: Endpoint, gpu_bdf: str) -> Endpoint:
    if endpoint.driver == "vfio-pci" and endpoint.bdf == gpu_bdf:
        return Endpoint(bdf=endpoint.bdf, driver=NVIDIA)
    return endpoint


@dataclass(frozen=True)
class Passthrough:
    plan: PassthroughPlan
    backend: DeviceBackend
    timeout: float

    async def apply(self, uuids: Mapping[str, str]) -> None:
        users = await self.backend.processes(self.plan.minor)
        if users:
            raise DeviceFailure(
                f"device {self.plan.gpu}: {len(users)} process(es) use the GPU (pid {', '.join(map(str, users))}); "
                "a VM can take it once they end"
            )
        sysfs = self.backend.pci()
        if not await asyncio.to_thread(sysfs.driver_loaded, VFIO_PCI):
            raise DeviceFailure(
                f"device {self.plan.gpu}: the vfio-pci driver is not loaded on this node; load it (modprobe vfio-pci)"
            )
        for endpoint in self.plan.endpoints:
            await bind_to_vfio(sysfs, endpoint.bdf, timeout=self.timeout)
        await wait_for_group_node(sysfs, self.plan.iommu_group, timeout=self.timeout)

    async def undo(self, shared_elsewhere: Collection[int]) -> None:
        sysfs = self.backend.pci()
        for endpoint in self.plan.endpoints:
            if not await writes_settled(sysfs, endpoint.bdf, timeout=self.timeout):
                raise DeviceFailure(
                    f"device {self.plan.gpu}: a write to {endpoint.bdf} is still in the kernel after "
                    f"{self.timeout:g}s (a process still uses it?); its functions go back once it finishes"
                )
            if endpoint.driver is not None and endpoint.driver != "vfio-pci":
                await restore_driver(sysfs, endpoint.bdf, endpoint.driver, timeout=self.timeout)
        await self._check_back(sysfs)

    async def _check_back(self, sysfs: PciSysfs) -> None:
        """The GPU serves containers again only if the driver holds it and the backend lists it."""
        driver = await asyncio.to_thread(sysfs.driver_of, self.plan.bdf)
        listed = {gpu.minor for gpu in (await self.backend.inventory()).gpus}
        if driver != NVIDIA or self.plan.minor not in listed:
            raise DeviceFailure(
                f"device {self.plan.gpu}: after the VM, its function {self.plan.bdf} is on {driver or 'no driver'}"
                + ("" if self.plan.minor in listed else " and the GPU is not in the backend's inventory")
            )

    def edits(self) -> ContainerEdits:
        return ContainerEdits()  # the VFIO nodes are the device's own edits (cdi.device_edits)
