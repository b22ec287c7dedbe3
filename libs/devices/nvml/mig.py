"""Creating and destroying MIG devices through NVML (blocking; run in a thread).

A MIG device is a GPU instance at a placement plus one compute instance spanning it. Creation rolls the
GPU instance back if the compute instance fails, so a failed prepare leaves no half-made device behind.
"""

import ctypes
import logging
from typing import Any

import pynvml

from libs.devices.errors import DeviceError, InsufficientResources, InvalidPlacement
from libs.devices.model import Gpu, MigDevice, MigPlacement, MigProfile
from libs.devices.nvml.calls import NOT_FOUND, Caller, translate

logger = logging.getLogger(__name__)

# The compute-instance profile that spans a whole GPU instance of N slices.
_FULL_COMPUTE_PROFILE = {
    1: pynvml.NVML_COMPUTE_INSTANCE_PROFILE_1_SLICE,
    2: pynvml.NVML_COMPUTE_INSTANCE_PROFILE_2_SLICE,
    3: pynvml.NVML_COMPUTE_INSTANCE_PROFILE_3_SLICE,
    4: pynvml.NVML_COMPUTE_INSTANCE_PROFILE_4_SLICE,
    6: pynvml.NVML_COMPUTE_INSTANCE_PROFILE_6_SLICE,
    7: pynvml.NVML_COMPUTE_INSTANCE_PROFILE_7_SLICE,
    8: pynvml.NVML_COMPUTE_INSTANCE_PROFILE_8_SLICE,
}


def create(node: str, gpu: Gpu, handle: Any, profile: MigProfile, start: int) -> MigDevice:
    call = Caller(node, gpu.name)
    placement = _placement(node, gpu, profile, start)
    gpu_instance = _create_gpu_instance(call, gpu, handle, profile, placement)
    try:
        compute_profile = call(
            pynvml.nvmlGpuInstanceGetComputeInstanceProfileInfo,
            gpu_instance,
            _FULL_COMPUTE_PROFILE[profile.slice_count],
            pynvml.NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED,
        )
        compute_instance = call(pynvml.nvmlGpuInstanceCreateComputeInstance, gpu_instance, compute_profile.id)
        gi_id = call(pynvml.nvmlGpuInstanceGetInfo, gpu_instance).id
        ci_id = call(pynvml.nvmlComputeInstanceGetInfo, compute_instance).id
        mig_uuid = _mig_uuid(call, handle, gi_id, ci_id)
    except DeviceError:
        _roll_back(call, gpu_instance)
        raise
    return MigDevice(
        parent_minor=gpu.minor,
        parent_uuid=gpu.uuid,
        profile=profile,
        placement=MigPlacement(placement.start, placement.size),
        uuid=mig_uuid,
        gi_id=gi_id,
        ci_id=ci_id,
    )


def _placement(node: str, gpu: Gpu, profile: MigProfile, start: int) -> Any:
    size = next((p.size for p in profile.placements if p.start == start), None)
    if size is None:
        raise InvalidPlacement(node, gpu.name, profile.name, start, [p.start for p in profile.placements])
    placement = pynvml.c_nvmlGpuInstancePlacement_t()
    placement.start, placement.size = start, size
    return placement


def _create_gpu_instance(call: Caller, gpu: Gpu, handle: Any, profile: MigProfile, placement: Any) -> Any:
    info = call(pynvml.nvmlDeviceGetGpuInstanceProfileInfo, handle, profile.nvml_profile_index)
    try:
        return pynvml.nvmlDeviceCreateGpuInstanceWithPlacement(handle, info.id, ctypes.byref(placement))
    except pynvml.NVMLError as error:
        if error.value != pynvml.NVML_ERROR_INSUFFICIENT_RESOURCES:
            raise translate(call.node, call.device, "nvmlDeviceCreateGpuInstanceWithPlacement", error) from error
        wanted = profile.device_name(gpu.minor, placement.start)
        problem = f"NVML refused {wanted}: {error} (its slices are taken or the profile's limit is reached)"
        raise InsufficientResources(call.node, call.device, problem) from error


def _mig_uuid(call: Caller, handle: Any, gi_id: int, ci_id: int) -> str:
    for slot in range(call(pynvml.nvmlDeviceGetMaxMigDeviceCount, handle)):
        mig = call.optional(pynvml.nvmlDeviceGetMigDeviceHandleByIndex, handle, slot, absent=NOT_FOUND)
        if mig is None:
            continue
        ids = (call(pynvml.nvmlDeviceGetGpuInstanceId, mig), call(pynvml.nvmlDeviceGetComputeInstanceId, mig))
        if ids == (gi_id, ci_id):
            return str(call(pynvml.nvmlDeviceGetUUID, mig))
    raise DeviceError(call.node, call.device, f"created GPU instance {gi_id} but NVML lists no MIG device for it")


def _roll_back(call: Caller, gpu_instance: Any) -> None:
    try:
        pynvml.nvmlGpuInstanceDestroy(gpu_instance)
    except pynvml.NVMLError as error:
        logger.error(
            "could not roll back a half-created MIG device",
            extra={"node": call.node, "device": call.device, "error": str(error)},
        )


def destroy(node: str, handle: Any, device: MigDevice) -> None:
    """Idempotent; and never destroys an instance that took over the id (another profile or placement)."""
    call = Caller(node, device.name)
    gpu_instance = call.optional(pynvml.nvmlDeviceGetGpuInstanceById, handle, device.gi_id, absent=NOT_FOUND)
    if gpu_instance is None or not _is(call, gpu_instance, device):
        return
    compute = call.optional(pynvml.nvmlGpuInstanceGetComputeInstanceById, gpu_instance, device.ci_id, absent=NOT_FOUND)
    if compute is not None:
        call(pynvml.nvmlComputeInstanceDestroy, compute)
    call(pynvml.nvmlGpuInstanceDestroy, gpu_instance)


def _is(call: Caller, gpu_instance: Any, device: MigDevice) -> bool:
    info = call(pynvml.nvmlGpuInstanceGetInfo, gpu_instance)
    return bool(
        info.profileId == device.profile.gi_profile_id
        and info.placement.start == device.placement.start
        and info.placement.size == device.placement.size
    )
