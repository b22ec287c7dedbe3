"""What an allocated device name stands for on this node, and whether another claim holds it, pure.

A name is a full GPU (``gpu-3``), an existing MIG device (static MIG: used as it is, never destroyed here), or
a MIG partition that does not exist yet (dynamic MIG: created at prepare, destroyed at unprepare). The names
are the ones discovery publishes (``libs.devices.names``), so a device allocated from a ResourceSlice is found
here by the same name.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from libs.devices.model import Gpu, Inventory, MigDevice
from libs.devices.names import gpu_device_name, vfio_device_name
from libs.slices.passthrough import NO_PASSTHROUGH, PassthroughGpus
from services.claim_preparation.errors import DeviceBusy, UnknownDevice


class FullGpu(msgspec.Struct, frozen=True, kw_only=True, tag="gpu"):
    name: str
    minor: int
    uuid: str


class MigTarget(msgspec.Struct, frozen=True, kw_only=True, tag="mig"):
    """A MIG device; ``dynamic`` when this claim creates it. The ids are known once it exists."""

    name: str
    parent_minor: int
    parent_uuid: str
    profile: str
    placement_start: int
    dynamic: bool
    uuid: str = ""
    gi_id: int | None = None
    ci_id: int | None = None

    def created(self, device: MigDevice) -> MigTarget:
        """This target as the device that now exists."""
        return msgspec.structs.replace(self, uuid=device.uuid, gi_id=device.gi_id, ci_id=device.ci_id)


class VfioTarget(msgspec.Struct, frozen=True, kw_only=True, tag="vfio"):
    """A whole GPU for a VM: its IOMMU group is bound to vfio-pci at prepare, given back at unprepare."""

    name: str
    minor: int
    uuid: str
    pci_bus_id: str
    iommu_group: int


Target = FullGpu | MigTarget | VfioTarget


def minor_of(target: Target) -> int:
    """The physical GPU a target lives on: what its operations change, hence what it locks."""
    return target.parent_minor if isinstance(target, MigTarget) else target.minor


def lock_key(target: Target) -> str:
    return gpu_device_name(minor_of(target))


def kind_of(target: Target) -> str:
    return "mig" if isinstance(target, MigTarget) else "vfio" if isinstance(target, VfioTarget) else "gpu"


def resolve(
    name: str, inventory: Inventory, *, dynamic_mig: bool, passthrough: PassthroughGpus = NO_PASSTHROUGH
) -> Target:
    """The target ``name`` stands for, or ``UnknownDevice``.

    A MIG partition that does not exist is created only in dynamic MIG mode: in static mode MIG devices are
    the operator's, and discovery publishes only those that exist, so a claim naming another one is stale. A
    GPU's vfio device exists only where the node's ``passthrough_gpus`` offers that GPU, as discovery does.
    """
    for gpu in inventory.gpus:
        if gpu.name == name:
            return FullGpu(name=name, minor=gpu.minor, uuid=gpu.uuid)
        if vfio_device_name(gpu.minor) == name:
            return _vfio(gpu, passthrough)
    for device in inventory.mig_devices:
        if device.name == name:
            return _static_mig(device)
    problem = f"device {name} does not exist on node {inventory.node} ({_summary(inventory)})"
    for gpu in inventory.gpus:
        if gpu.mig_enabled and name.startswith(f"{gpu.name}-mig-"):
            partition = _partition(gpu, inventory, name)
            if partition is not None and dynamic_mig:
                return partition
            if partition is not None:
                problem = f"MIG device {name} does not exist, and MIG devices are created only in dynamic MIG mode"
    raise UnknownDevice(problem)


def _vfio(gpu: Gpu, passthrough: PassthroughGpus) -> VfioTarget:
    if not passthrough.offers(gpu) or gpu.iommu_group is None:
        why = "MIG is on" if gpu.mig_enabled else "it has no IOMMU group" if gpu.iommu_group is None else ""
        raise UnknownDevice(
            f"device {vfio_device_name(gpu.minor)}: {gpu.name} is not offered to VMs on this node "
            f"({why or 'GPUDRA_PASSTHROUGH_GPUS does not name it'})"
        )
    return VfioTarget(
        name=vfio_device_name(gpu.minor),
        minor=gpu.minor,
        uuid=gpu.uuid,
        pci_bus_id=gpu.pci_bus_id,
        iommu_group=gpu.iommu_group,
    )


def _static_mig(device: MigDevice) -> MigTarget:
    return MigTarget(
        name=device.name,
        parent_minor=device.parent_minor,
        parent_uuid=device.parent_uuid,
        profile=device.profile.name,
        placement_start=device.placement.start,
        dynamic=False,
        uuid=device.uuid,
        gi_id=device.gi_id,
        ci_id=device.ci_id,
    )


def _partition(gpu: Gpu, inventory: Inventory, name: str) -> MigTarget | None:
    for profile in inventory.profiles_for(gpu):
        for placement in profile.placements:
            if profile.device_name(gpu.minor, placement.start) == name:
                return MigTarget(
                    name=name,
                    parent_minor=gpu.minor,
                    parent_uuid=gpu.uuid,
                    profile=profile.name,
                    placement_start=placement.start,
                    dynamic=True,
                )
    return None


def _summary(inventory: Inventory) -> str:
    gpus = ", ".join(gpu.name for gpu in sorted(inventory.gpus, key=lambda g: g.minor)) or "no GPUs"
    migs = len(inventory.mig_devices)
    return f"it has {gpus}" + (f" and {migs} MIG devices" if migs else "")


class Holder(msgspec.Struct, frozen=True, kw_only=True):
    """A device some other claim has prepared (or is preparing)."""

    claim: str
    """``namespace/name`` of that claim."""
    target: Target
    share: bool = False
    """A share of a GPU shared by consumable capacity: other shares of the GPU may be beside it."""


def overlaps(first: Target, second: Target) -> bool:
    """The same device, or two on one GPU of which one is the whole GPU (for a container or a VM): only MIG
    devices share a GPU."""
    if first.name == second.name:
        return True
    if isinstance(first, MigTarget) and isinstance(second, MigTarget):
        return False
    return minor_of(first) == minor_of(second)


def check_free(wanted: Iterable[tuple[Target, bool]], held: Iterable[Holder]) -> None:
    """``DeviceBusy`` naming the first wanted device another claim holds; ``wanted`` pairs each target with
    whether it is a share, which is free beside other shares of the same GPU (whether they fit is
    ``shares.check_fits``'s question)."""
    held = list(held)
    for target, share in wanted:
        for holder in held:
            if share and holder.share and holder.target.name == target.name:
                continue
            if overlaps(target, holder.target):
                same = holder.target.name == target.name
                what = "is" if same else f"overlaps {holder.target.name}, which is"
                whose = "a share for" if holder.share else "for"
                raise DeviceBusy(f"device {target.name} {what} already prepared {whose} claim {holder.claim}")
