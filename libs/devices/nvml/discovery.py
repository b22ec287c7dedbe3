"""Reading the node's GPUs, MIG devices and MIG profile tables through NVML (blocking; run in a thread).

Read-only: nothing here changes a GPU setting, which is what lets scripts/gpu-check run it on any machine.
A GPU that is lost while being read is left out with a warning instead of failing the whole node: the
health service reports it, and the other GPUs stay schedulable.
"""

import ctypes
import dataclasses
import logging
import uuid
from pathlib import Path
from typing import Any

import pynvml

from libs.devices.errors import DeviceLost
from libs.devices.model import (
    ConfidentialComputing,
    FabricInfo,
    Gpu,
    Inventory,
    MigDevice,
    MigPlacement,
    MigProfile,
)
from libs.devices.names import gpu_device_name
from libs.devices.nvml import sysfs
from libs.devices.nvml.calls import ABSENT, NOT_FOUND, Caller, text

logger = logging.getLogger(__name__)

_ARCHITECTURES = {
    "KEPLER": "Kepler",
    "MAXWELL": "Maxwell",
    "PASCAL": "Pascal",
    "VOLTA": "Volta",
    "TURING": "Turing",
    "AMPERE": "Ampere",
    "ADA": "Ada Lovelace",
    "HOPPER": "Hopper",
    "BLACKWELL": "Blackwell",
    "RUBIN": "Rubin",
}
ARCHITECTURES = {
    getattr(pynvml, f"NVML_DEVICE_ARCH_{key}"): name
    for key, name in _ARCHITECTURES.items()
    if hasattr(pynvml, f"NVML_DEVICE_ARCH_{key}")
}
BRANDS = {
    pynvml.NVML_BRAND_TESLA: "Tesla",
    pynvml.NVML_BRAND_NVIDIA: "Nvidia",
    pynvml.NVML_BRAND_QUADRO: "Quadro",
    pynvml.NVML_BRAND_QUADRO_RTX: "QuadroRTX",
    pynvml.NVML_BRAND_NVIDIA_RTX: "NvidiaRTX",
    pynvml.NVML_BRAND_GEFORCE: "GeForce",
    pynvml.NVML_BRAND_TITAN: "Titan",
    pynvml.NVML_BRAND_NVS: "NVS",
}
ADDRESSING_MODES = {pynvml.NVML_DEVICE_ADDRESSING_MODE_HMM: "HMM", pynvml.NVML_DEVICE_ADDRESSING_MODE_ATS: "ATS"}


@dataclasses.dataclass(frozen=True)
class Discovery:
    """The inventory plus the NVML handles it was read through, by minor number."""

    inventory: Inventory
    handles: dict[int, Any]


def cuda_version(value: int) -> str:
    """NVML's 12040 -> `12.4`."""
    return f"{value // 1000}.{value % 1000 // 10}"


def discover(node: str, sysfs_root: Path) -> Discovery:
    system = Caller(node, "NVML")
    driver = system(pynvml.nvmlSystemGetDriverVersion)
    cuda = cuda_version(system(pynvml.nvmlSystemGetCudaDriverVersion))
    gpus: list[Gpu] = []
    mig_devices: list[MigDevice] = []
    tables: dict[str, tuple[MigProfile, ...]] = {}
    handles: dict[int, Any] = {}
    for index in range(system(pynvml.nvmlDeviceGetCount)):
        try:
            gpu, handle = read_gpu(node, index, driver, cuda, sysfs_root)
            if gpu.mig_enabled:
                table = tables.get(gpu.product_name) or read_profiles(Caller(node, gpu.name), handle)
                mig_devices += read_mig_devices(node, gpu, handle, table)
                tables[gpu.product_name] = table
        except DeviceLost as lost:
            logger.warning("skipping a GPU lost during discovery", extra={"node": node, "device": lost.device})
            continue
        gpus.append(gpu)
        handles[gpu.minor] = handle
    inventory = Inventory(
        node=node,
        backend="nvml",
        driver_version=driver,
        cuda_driver_version=cuda,
        gpus=tuple(gpus),
        mig_devices=tuple(mig_devices),
        mig_profiles=tables,
        confidential_computing=cc_mode(system.optional(pynvml.nvmlSystemGetConfComputeState)),
    )
    return Discovery(inventory=inventory, handles=handles)


def cc_mode(state: Any) -> ConfidentialComputing | None:
    """NVML's system state as a mode; None where the driver cannot say (pre-Hopper drivers lack the call)."""
    if state is None:
        return None
    if state.ccFeature != pynvml.NVML_CC_SYSTEM_FEATURE_ENABLED:
        return "off"
    return "devtools" if state.devToolsMode == pynvml.NVML_CC_SYSTEM_DEVTOOLS_MODE_ON else "on"


def read_gpu(node: str, index: int, driver: str, cuda: str, sysfs_root: Path) -> tuple[Gpu, Any]:
    handle = Caller(node, f"GPU index {index}")(pynvml.nvmlDeviceGetHandleByIndex, index)
    minor = Caller(node, f"GPU index {index}")(pynvml.nvmlDeviceGetMinorNumber, handle)
    call = Caller(node, gpu_device_name(minor))
    bus_id = sysfs.sysfs_bus_id(text(call(pynvml.nvmlDeviceGetPciInfo, handle).busId))
    major, minor_cc = call(pynvml.nvmlDeviceGetCudaComputeCapability, handle)
    mig_mode = call.optional(pynvml.nvmlDeviceGetMigMode, handle)
    addressing = call.optional(pynvml.nvmlDeviceGetAddressingMode, handle)
    gpu = Gpu(
        minor=minor,
        index=index,
        uuid=call(pynvml.nvmlDeviceGetUUID, handle),
        product_name=call(pynvml.nvmlDeviceGetName, handle),
        brand=BRANDS.get(call(pynvml.nvmlDeviceGetBrand, handle), "Unknown"),
        architecture=ARCHITECTURES.get(call(pynvml.nvmlDeviceGetArchitecture, handle), "Unknown"),
        cuda_compute_capability=f"{major}.{minor_cc}",
        driver_version=driver,
        cuda_driver_version=cuda,
        memory_bytes=call(pynvml.nvmlDeviceGetMemoryInfo, handle).total,
        pci_bus_id=bus_id,
        pcie_root=sysfs.pcie_root(sysfs_root, bus_id),
        numa_node=sysfs.numa_node(sysfs_root, bus_id),
        iommu_group=sysfs.iommu_group(sysfs_root, bus_id),
        mig_enabled=bool(mig_mode and mig_mode[0] == pynvml.NVML_DEVICE_MIG_ENABLE),
        addressing_mode=ADDRESSING_MODES.get(addressing) if addressing is not None else None,
        fabric=read_fabric(call, handle),
    )
    return gpu, handle


def read_fabric(call: Caller, handle: Any) -> FabricInfo | None:
    """Multi-node NVLink membership; None on GPUs without a fabric or before the fabric manager finished."""
    info = pynvml.c_nvmlGpuFabricInfoV_t()
    if call.optional(pynvml.nvmlDeviceGetGpuFabricInfoV, handle, ctypes.byref(info)) is None:
        return None
    cluster = uuid.UUID(bytes=bytes(info.clusterUuid))
    if info.state != pynvml.NVML_GPU_FABRIC_STATE_COMPLETED or info.status != pynvml.NVML_SUCCESS or not cluster.int:
        return None
    return FabricInfo(cluster_uuid=str(cluster), clique_id=info.cliqueId)


def read_profiles(call: Caller, handle: Any) -> tuple[MigProfile, ...]:
    """The GPU's GPU-instance profiles with the placements NVML says are possible."""
    profiles = []
    for index in range(pynvml.NVML_GPU_INSTANCE_PROFILE_COUNT):
        info = call.optional(pynvml.nvmlDeviceGetGpuInstanceProfileInfo, handle, index, absent=ABSENT | NOT_FOUND)
        if info is not None:
            profiles.append(_profile(call, handle, index, info))
    return tuple(profiles)


def _profile(call: Caller, handle: Any, index: int, info: Any) -> MigProfile:
    return MigProfile(
        name=text(info.name).removeprefix("MIG "),
        gi_profile_id=info.id,
        nvml_profile_index=index,
        slice_count=info.sliceCount,
        instance_count=info.instanceCount,
        multiprocessors=info.multiprocessorCount,
        copy_engines=info.copyEngineCount,
        decoders=info.decoderCount,
        encoders=info.encoderCount,
        jpeg_engines=info.jpegCount,
        ofa_engines=info.ofaCount,
        memory_bytes=info.memorySizeMB * 1024 * 1024,
        placements=read_placements(call, handle, info.id),
    )


def read_placements(call: Caller, handle: Any, profile_id: int) -> tuple[MigPlacement, ...]:
    """Asks for the count first (NULL array), then for the placements."""
    count = ctypes.c_uint(0)
    call(pynvml.nvmlDeviceGetGpuInstancePossiblePlacements, handle, profile_id, None, ctypes.byref(count))
    array = (pynvml.c_nvmlGpuInstancePlacement_t * count.value)()
    call(pynvml.nvmlDeviceGetGpuInstancePossiblePlacements, handle, profile_id, array, ctypes.byref(count))
    return tuple(MigPlacement(array[i].start, array[i].size) for i in range(count.value))


def read_mig_devices(node: str, gpu: Gpu, handle: Any, table: tuple[MigProfile, ...]) -> list[MigDevice]:
    call = Caller(node, gpu.name)
    by_id = {profile.gi_profile_id: profile for profile in table}
    devices = []
    for slot in range(call(pynvml.nvmlDeviceGetMaxMigDeviceCount, handle)):
        mig = call.optional(pynvml.nvmlDeviceGetMigDeviceHandleByIndex, handle, slot, absent=NOT_FOUND)
        device = _mig_device(call, gpu, handle, mig, by_id) if mig is not None else None
        if device is not None:
            devices.append(device)
    return devices


def _mig_device(call: Caller, gpu: Gpu, handle: Any, mig: Any, by_id: dict[int, MigProfile]) -> MigDevice | None:
    gi_id = call(pynvml.nvmlDeviceGetGpuInstanceId, mig)
    info = call(pynvml.nvmlGpuInstanceGetInfo, call(pynvml.nvmlDeviceGetGpuInstanceById, handle, gi_id))
    profile = by_id.get(info.profileId)
    if profile is None:
        logger.warning(
            "skipping a MIG device whose profile NVML does not list",
            extra={"node": call.node, "device": gpu.name, "gpu_instance_id": gi_id, "profile_id": info.profileId},
        )
        return None
    return MigDevice(
        parent_minor=gpu.minor,
        parent_uuid=gpu.uuid,
        profile=profile,
        placement=MigPlacement(info.placement.start, info.placement.size),
        uuid=call(pynvml.nvmlDeviceGetUUID, mig),
        gi_id=gi_id,
        ci_id=call(pynvml.nvmlDeviceGetComputeInstanceId, mig),
    )
