"""Fault injection: what a failing GPU does to its counters and to the event stream NVML would deliver.

Each function returns the next state and the events a real GPU would raise, so the health service sees
a simulated fault exactly as it would see a real one: an event on `events()` and/or a changed counter in
`read_counters()`. A fault injected as sticky survives a GPU reset (only `clear_faults`, the simulated
repair, removes it), for testing remediation that escalates from reset to reboot.
"""

from collections.abc import Sequence

import msgspec

from libs.devices.errors import DeviceNotFound
from libs.devices.events import DeviceEvent, EccEvent, GpuLostEvent, RecoveryActionEvent, XidEvent
from libs.devices.model import HealthCounters
from libs.devices.simulated.ops import find_gpu, healthy_counters, replace_sim
from libs.devices.simulated.state import SimState

NVLINK_XID = 74

Outcome = tuple[SimState, Sequence[DeviceEvent]]


def inject_xid(state: SimState, device: int | str, xid: int) -> Outcome:
    """`device` is a minor number, `gpu-<minor>` or a MIG device name (the event then carries its ids)."""
    minor, gi_id, ci_id = _resolve(state, device)
    gpu = find_gpu(state, minor)
    event = XidEvent(minor=minor, uuid=gpu.uuid, xid=xid, gpu_instance_id=gi_id, compute_instance_id=ci_id)
    return state, [event]


def inject_ecc(state: SimState, minor: int, *, double_bit: bool, count: int, sticky: bool) -> Outcome:
    """Single-bit errors are corrected; a double-bit error also leaves a row remap pending until a reset."""
    gpu = find_gpu(state, minor)
    counters = state.sims[minor].counters
    if double_bit:
        counters = msgspec.structs.replace(
            counters,
            ecc_volatile_uncorrected=counters.ecc_volatile_uncorrected + count,
            ecc_aggregate_uncorrected=counters.ecc_aggregate_uncorrected + count,
            row_remap_pending=True,
        )
    else:
        counters = msgspec.structs.replace(
            counters,
            ecc_volatile_corrected=counters.ecc_volatile_corrected + count,
            ecc_aggregate_corrected=counters.ecc_aggregate_corrected + count,
        )
    state = _faulted(state, minor, sticky, counters=counters)
    return state, [EccEvent(minor=minor, uuid=gpu.uuid, double_bit=double_bit)]


def set_lost(state: SimState, minor: int, *, lost: bool, sticky: bool) -> Outcome:
    gpu = find_gpu(state, minor)
    if not lost:
        return replace_sim(state, minor, lost=False), []
    return _faulted(state, minor, sticky, lost=True), [GpuLostEvent(minor=minor, uuid=gpu.uuid)]


def set_nvlink(state: SimState, minor: int, link: int, *, up: bool, sticky: bool) -> Outcome:
    """A link going down raises XID 74 (NVLink error), as the driver reports it."""
    gpu = find_gpu(state, minor)
    links = list(state.sims[minor].counters.nvlink_up)
    if not 0 <= link < len(links):
        raise DeviceNotFound(state.node, f"{gpu.name} NVLink {link} (the GPU has {len(links)} links)")
    links[link] = up
    counters = msgspec.structs.replace(state.sims[minor].counters, nvlink_up=tuple(links))
    if up:
        return replace_sim(state, minor, counters=counters), []
    state = _faulted(state, minor, sticky, counters=counters)
    return state, [XidEvent(minor=minor, uuid=gpu.uuid, xid=NVLINK_XID)]


def set_counters(state: SimState, minor: int, changes: dict[str, object], *, sticky: bool) -> Outcome:
    """Any HealthCounters field (temperature, thermal slowdown, retired pages, PCIe replays): polled, no event."""
    find_gpu(state, minor)
    allowed = set(HealthCounters.__struct_fields__) - {"minor"}
    unknown = sorted(set(changes) - allowed)
    if unknown:
        raise ValueError(f"unknown health counters {unknown}; known: {sorted(allowed)}")
    current = msgspec.structs.asdict(state.sims[minor].counters)
    counters = msgspec.convert({**current, **changes}, HealthCounters)
    return _faulted(state, minor, sticky, counters=counters), []


def recovery_action(state: SimState, minor: int, action: int) -> Outcome:
    gpu = find_gpu(state, minor)
    return state, [RecoveryActionEvent(minor=minor, uuid=gpu.uuid, action=action)]


def clear_faults(state: SimState, minor: int) -> Outcome:
    """The simulated repair (a replaced board): every fault goes, sticky or not."""
    gpu = find_gpu(state, minor)
    return replace_sim(state, minor, counters=healthy_counters(gpu, state.profile), lost=False, sticky=False), []


def _faulted(state: SimState, minor: int, sticky: bool, **changes: object) -> SimState:
    return replace_sim(state, minor, sticky=state.sims[minor].sticky or sticky, **changes)


def _resolve(state: SimState, device: int | str) -> tuple[int, int | None, int | None]:
    if isinstance(device, int):
        return device, None, None
    for gpu in state.gpus:
        if gpu.name == device:
            return gpu.minor, None, None
    for mig in state.mig_devices:
        if mig.name == device:
            return mig.parent_minor, mig.gi_id, mig.ci_id
    raise DeviceNotFound(state.node, device)
