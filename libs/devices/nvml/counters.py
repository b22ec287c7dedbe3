"""Reading the health counters of one GPU through NVML (blocking; run in a thread).

Counters a GPU does not support read as zero/False rather than failing the read: an H100 without row
remapping support is not unhealthy, and the poller should still see its temperature.
"""

from typing import Any

import pynvml

from libs.devices.model import HealthCounters
from libs.devices.nvml.calls import ABSENT, NOT_FOUND, Caller

_THERMAL = pynvml.nvmlClocksEventReasonHwThermalSlowdown | pynvml.nvmlClocksEventReasonSwThermalSlowdown


def read_counters(call: Caller, handle: Any, minor: int) -> HealthCounters:
    remapped = call.optional(pynvml.nvmlDeviceGetRemappedRows, handle) or (0, 0, 0, 0)
    reasons = call.optional(pynvml.nvmlDeviceGetCurrentClocksEventReasons, handle) or 0
    return HealthCounters(
        minor=minor,
        ecc_volatile_corrected=_ecc(call, handle, corrected=True, volatile=True),
        ecc_volatile_uncorrected=_ecc(call, handle, corrected=False, volatile=True),
        ecc_aggregate_corrected=_ecc(call, handle, corrected=True, volatile=False),
        ecc_aggregate_uncorrected=_ecc(call, handle, corrected=False, volatile=False),
        retired_pages_pending=call.optional(pynvml.nvmlDeviceGetRetiredPagesPendingStatus, handle)
        == pynvml.NVML_FEATURE_ENABLED,
        row_remap_pending=bool(remapped[2]),
        row_remap_failed=bool(remapped[3]),
        temperature_c=call(pynvml.nvmlDeviceGetTemperature, handle, pynvml.NVML_TEMPERATURE_GPU),
        thermal_slowdown=bool(reasons & _THERMAL),
        nvlink_up=_nvlinks(call, handle),
        pcie_replays=call.optional(pynvml.nvmlDeviceGetPcieReplayCounter, handle) or 0,
    )


def _ecc(call: Caller, handle: Any, *, corrected: bool, volatile: bool) -> int:
    kind = pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED if corrected else pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED
    counter = pynvml.NVML_VOLATILE_ECC if volatile else pynvml.NVML_AGGREGATE_ECC
    return int(call.optional(pynvml.nvmlDeviceGetTotalEccErrors, handle, kind, counter) or 0)


def _nvlinks(call: Caller, handle: Any) -> tuple[bool, ...]:
    """Links are numbered from 0; the first one NVML does not know ends the GPU's list."""
    states = []
    for link in range(pynvml.NVML_NVLINK_MAX_LINKS):
        state = call.optional(pynvml.nvmlDeviceGetNvLinkState, handle, link, absent=ABSENT | NOT_FOUND)
        if state is None:
            break
        states.append(state == pynvml.NVML_FEATURE_ENABLED)
    return tuple(states)


def process_ids(call: Caller, handle: Any) -> tuple[int, ...]:
    """Compute and graphics processes on the GPU; a driver that cannot list one kind lists none of it."""
    found: set[int] = set()
    for listing in (pynvml.nvmlDeviceGetComputeRunningProcesses, pynvml.nvmlDeviceGetGraphicsRunningProcesses):
        found.update(int(process.pid) for process in call.optional(listing, handle) or ())
    return tuple(sorted(found))
