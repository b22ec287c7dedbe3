"""A simulated machine: the profile a user names, and the hardware it stands for on one node.

Everything here is a pure function of (node, profile), so every process that opens the same state
directory, and every restart, sees the same UUIDs, PCI addresses and NUMA layout.
"""

import uuid
from typing import Annotated, Literal

import msgspec

from libs.devices.model import ConfidentialComputing, FabricInfo, Gpu, MigDevice, MigProfile
from libs.devices.simulated.catalogue import GpuModel, gpu_models
from libs.devices.simulated.mig import GpuLayout

_UUID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_DNS, "gpudra.io")

FIRST_IOMMU_GROUP = 10
"""GPU index i is in IOMMU group 10 + i: on a host the lowest groups belong to the chipset's own functions."""

Count = Annotated[int, msgspec.Meta(ge=1, le=64)]
NonNegative = Annotated[int, msgspec.Meta(ge=0)]


class PreCreatedMig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A MIG device that exists when the machine starts (static MIG)."""

    gpu: NonNegative
    profile: str
    placement: NonNegative


class FabricSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """NVLink fabric membership: every node built from the profile joins this clique, like trays of a rack."""

    cluster_uuid: str
    clique_id: NonNegative


class MachineProfile(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: str
    gpu_model: str
    gpu_count: Count = 8
    driver_version: str = "570.133.20"
    cuda_driver_version: str = "12.8"
    numa_nodes: Count = 2
    nvlink_links: Annotated[int, msgspec.Meta(ge=0, le=36)] = 0
    minor_numbers: tuple[NonNegative, ...] = ()
    addressing_mode: str | None = None
    mig_enabled: tuple[NonNegative, ...] | Literal["all"] = ()
    mig_devices: tuple[PreCreatedMig, ...] = ()
    fabric: FabricSpec | None = None
    sticky_faults: bool = False
    confidential_computing: ConfidentialComputing | None = None
    """What the simulated driver reports of confidential computing (None: a driver that does not say)."""
    audio_functions: bool = False
    """Each GPU also has an audio function (``.1``) in its IOMMU group, which a VM must take with it."""

    @property
    def model(self) -> GpuModel:
        return gpu_models()[self.gpu_model]

    def minor_of(self, index: int) -> int:
        return self.minor_numbers[index] if self.minor_numbers else index

    def mig_enabled_on(self, index: int) -> bool:
        return self.mig_enabled == "all" or index in self.mig_enabled


class Hardware(msgspec.Struct, frozen=True, kw_only=True):
    gpus: tuple[Gpu, ...]
    mig_profiles: dict[str, tuple[MigProfile, ...]]
    mig_devices: tuple[MigDevice, ...]


def gpu_uuid(node: str, index: int) -> str:
    return f"GPU-{uuid.uuid5(_UUID_NAMESPACE, f'{node}/gpu/{index}')}"


def mig_uuid(node: str, parent_minor: int, device_name: str) -> str:
    return f"MIG-{uuid.uuid5(_UUID_NAMESPACE, f'{node}/gpu/{parent_minor}/{device_name}')}"


def pci_location(index: int) -> tuple[str, str]:
    """(bus id, PCIe root) shaped like a DGX: GPUs in pairs behind one root port, eight per PCI domain."""
    domain, slot = divmod(index, 8)
    root_bus = (slot // 2) * 0x40
    bus = root_bus + 0x10 + (slot % 2) * 0x20
    return f"{domain:04x}:{bus:02x}:00.0", f"pci{domain:04x}:{root_bus:02x}"


def build_gpu(node: str, profile: MachineProfile, index: int) -> Gpu:
    model = profile.model
    bus_id, root = pci_location(index)
    fabric = profile.fabric
    return Gpu(
        minor=profile.minor_of(index),
        index=index,
        uuid=gpu_uuid(node, index),
        product_name=model.product_name,
        brand=model.brand,
        architecture=model.architecture,
        cuda_compute_capability=model.cuda_compute_capability,
        driver_version=profile.driver_version,
        cuda_driver_version=profile.cuda_driver_version,
        memory_bytes=model.memory_bytes,
        pci_bus_id=bus_id,
        pcie_root=root,
        numa_node=index * profile.numa_nodes // profile.gpu_count,
        mig_enabled=profile.mig_enabled_on(index),
        addressing_mode=profile.addressing_mode,
        fabric=FabricInfo(cluster_uuid=fabric.cluster_uuid, clique_id=fabric.clique_id) if fabric else None,
        iommu_group=FIRST_IOMMU_GROUP + index,
    )


def create_mig_device(layout: GpuLayout, profile_name: str, start: int) -> MigDevice:
    """The MIG device the GPU would create, or the error it would raise (see GpuLayout.plan)."""
    profile, placement = layout.plan(profile_name, start)
    gpu = layout.gpu
    return MigDevice(
        parent_minor=gpu.minor,
        parent_uuid=gpu.uuid,
        profile=profile,
        placement=placement,
        uuid=mig_uuid(layout.node, gpu.minor, profile.device_name(gpu.minor, placement.start)),
        gi_id=layout.next_gpu_instance_id(),
        ci_id=0,
    )


def layout_of(node: str, gpu: Gpu, profiles: tuple[MigProfile, ...], devices: tuple[MigDevice, ...]) -> GpuLayout:
    mine = tuple(d for d in devices if d.parent_minor == gpu.minor)
    return GpuLayout(node=node, gpu=gpu, profiles=profiles, devices=mine)


def build_hardware(node: str, profile: MachineProfile) -> Hardware:
    """Raises the device errors a pre-created MIG layout that the GPU would refuse gets."""
    gpus = tuple(build_gpu(node, profile, index) for index in range(profile.gpu_count))
    profiles = profile.model.mig_profiles
    devices: tuple[MigDevice, ...] = ()
    for wanted in profile.mig_devices:
        layout = layout_of(node, gpus[wanted.gpu], profiles, devices)
        devices += (create_mig_device(layout, wanted.profile, wanted.placement),)
    return Hardware(gpus=gpus, mig_profiles={profile.model.product_name: profiles}, mig_devices=devices)
