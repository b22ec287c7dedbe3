"""What the simulated GPUs do when asked, as pure functions from one state to the next.

Kept apart from locking and files (state.py) so each rule reads on its own and is tested without a disk.
"""

import logging

import msgspec

from libs.devices.errors import DeviceLost, DeviceNotFound
from libs.devices.model import Gpu, HealthCounters, Inventory, MigDevice, MpsSettings, TimeSliceInterval
from libs.devices.simulated.machine import MachineProfile, build_hardware, create_mig_device, layout_of
from libs.devices.simulated.state import GpuSim, SimState

logger = logging.getLogger(__name__)


def initial_state(node: str, profile: MachineProfile) -> SimState:
    hardware = build_hardware(node, profile)
    return SimState(
        node=node,
        profile=profile,
        gpus=hardware.gpus,
        mig_profiles=hardware.mig_profiles,
        mig_devices=hardware.mig_devices,
        sims={gpu.minor: GpuSim(counters=healthy_counters(gpu, profile)) for gpu in hardware.gpus},
    )


def healthy_counters(gpu: Gpu, profile: MachineProfile) -> HealthCounters:
    return HealthCounters(minor=gpu.minor, nvlink_up=(True,) * profile.nvlink_links)


def find_gpu(state: SimState, minor: int) -> Gpu:
    for gpu in state.gpus:
        if gpu.minor == minor:
            return gpu
    raise DeviceNotFound(state.node, f"gpu-{minor}")


def answering_gpu(state: SimState, minor: int) -> Gpu:
    """The GPU, if it still answers; a lost GPU refuses every operation, as NVML's GPU_IS_LOST does."""
    gpu = find_gpu(state, minor)
    if state.sims[minor].lost:
        raise DeviceLost(state.node, gpu.name)
    return gpu


def replace_sim(state: SimState, minor: int, **changes: object) -> SimState:
    sims = dict(state.sims)
    sims[minor] = msgspec.structs.replace(sims[minor], **changes)
    return msgspec.structs.replace(state, sims=sims)


def inventory_of(state: SimState) -> Inventory:
    lost = {minor for minor, sim in state.sims.items() if sim.lost}
    for minor in sorted(lost):
        logger.warning("leaving a lost GPU out of the inventory", extra={"node": state.node, "device": f"gpu-{minor}"})
    return Inventory(
        node=state.node,
        backend="simulated",
        driver_version=state.profile.driver_version,
        cuda_driver_version=state.profile.cuda_driver_version,
        gpus=tuple(gpu for gpu in state.gpus if gpu.minor not in lost),
        mig_devices=tuple(d for d in state.mig_devices if d.parent_minor not in lost),
        mig_profiles=state.mig_profiles,
        confidential_computing=state.profile.confidential_computing,
    )


def add_mig_device(state: SimState, parent_minor: int, profile_name: str, start: int) -> tuple[SimState, MigDevice]:
    gpu = answering_gpu(state, parent_minor)
    layout = layout_of(state.node, gpu, state.mig_profiles.get(gpu.product_name, ()), state.mig_devices)
    device = create_mig_device(layout, profile_name, start)
    return msgspec.structs.replace(state, mig_devices=(*state.mig_devices, device)), device


def remove_mig_device(state: SimState, device: MigDevice) -> SimState | None:
    """None when the device is already gone: destroying twice is not an error."""
    answering_gpu(state, device.parent_minor)
    kept = tuple(d for d in state.mig_devices if d.uuid != device.uuid)
    if len(kept) == len(state.mig_devices):
        return None
    return msgspec.structs.replace(state, mig_devices=kept)


def set_time_slice(state: SimState, minor: int, interval: TimeSliceInterval) -> SimState:
    answering_gpu(state, minor)
    return replace_sim(state, minor, time_slice=interval)


def set_mps(state: SimState, minor: int, settings: MpsSettings | None) -> SimState:
    answering_gpu(state, minor)
    return replace_sim(state, minor, mps=settings)


def reset_gpu(state: SimState, minor: int) -> SimState:
    """A reset drops MIG devices and sharing settings; it clears faults unless they are sticky."""
    gpu = find_gpu(state, minor)
    sim = state.sims[minor]
    kept = tuple(d for d in state.mig_devices if d.parent_minor != minor)
    state = msgspec.structs.replace(state, mig_devices=kept)
    sharing: dict[str, object] = {"time_slice": TimeSliceInterval.DEFAULT, "mps": None}
    if sim.sticky:
        return replace_sim(state, minor, **sharing)
    counters = msgspec.structs.replace(
        healthy_counters(gpu, state.profile),
        ecc_aggregate_corrected=sim.counters.ecc_aggregate_corrected,
        ecc_aggregate_uncorrected=sim.counters.ecc_aggregate_uncorrected,
        row_remap_failed=sim.counters.row_remap_failed,
    )
    return replace_sim(state, minor, lost=False, counters=counters, **sharing)


def read_counters(state: SimState, minor: int) -> HealthCounters:
    answering_gpu(state, minor)
    return state.sims[minor].counters
