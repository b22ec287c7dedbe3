"""Spreading a pool's devices and counter sets over ResourceSlices within the API server's limits.

- Devices without counters (full GPUs, static MIG devices) share slices, 128 per slice (64 from 1.35 when
  any of them is tainted).
- 1.34: a counter set must sit in the slice of the devices that consume it, so each dynamic-MIG GPU gets
  one combined slice.
- 1.35+: counter sets go into counters-only slices (8 sets each) and each dynamic-MIG GPU gets its own
  device slice(s), 64 devices each.
"""

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from libs.slices.devices import Device, GpuGroup
from libs.slices.limits import SliceLimits


class SliceLayoutError(Exception):
    """A GPU's devices cannot fit the slices this Kubernetes version allows."""


@dataclass
class SliceContent:
    devices: list[Device] = field(default_factory=list)
    shared_counters: list[dict[str, Any]] = field(default_factory=list)


def lay_out(groups: Sequence[GpuGroup], limits: SliceLimits) -> list[SliceContent]:
    shared = [(group, group.counter_set) for group in groups if group.counter_set is not None]
    plain = [device for group in groups if group.counter_set is None for device in group.devices]
    if limits.separate_counter_slices:
        size = limits.max_counter_sets_per_slice
        sets = [counter_set for _, counter_set in shared]
        contents = [SliceContent(shared_counters=sets[i : i + size]) for i in range(0, len(sets), size)]
        contents += [SliceContent(devices=chunk) for group, _ in shared for chunk in _chunks(group.devices, limits)]
    else:
        contents = [_combined(group, counter_set, limits) for group, counter_set in shared]
    contents += [SliceContent(devices=chunk) for chunk in _chunks(plain, limits)]
    return contents or [SliceContent()]


def _combined(group: GpuGroup, counter_set: dict[str, Any], limits: SliceLimits) -> SliceContent:
    problems = []
    if len(group.devices) > limits.max_devices:
        problems.append(f"{len(group.devices)} devices (limit {limits.max_devices})")
    if len(counter_set["counters"]) > limits.max_counters_per_slice:
        problems.append(f"{len(counter_set['counters'])} counters (limit {limits.max_counters_per_slice})")
    if consumed_counters(group.devices) > limits.max_consumed_counters_per_slice:
        problems.append(f"{consumed_counters(group.devices)} consumed counters")
    if problems:
        raise SliceLayoutError(
            f"gpu-{group.minor}: dynamic MIG needs {', '.join(problems)} in one ResourceSlice, more than "
            f"Kubernetes 1.{limits.minor} allows; use Kubernetes 1.35+ or static MIG"
        )
    return SliceContent(devices=group.devices, shared_counters=[counter_set])


def _chunks(devices: Sequence[Device], limits: SliceLimits) -> Iterator[list[Device]]:
    """Consecutive runs that stay within the device limit and the consumed-counter budget of a slice."""
    chunk: list[Device] = []
    consumed = 0
    for device in devices:
        cost = consumed_counters([device])
        limit = _device_limit([*chunk, device], limits)
        if chunk and (len(chunk) >= limit or consumed + cost > limits.max_consumed_counters_per_slice):
            yield chunk
            chunk, consumed = [], 0
        chunk.append(device)
        consumed += cost
    if chunk:
        yield chunk


def _device_limit(devices: Sequence[Device], limits: SliceLimits) -> int:
    if any("taints" in d or "consumesCounters" in d for d in devices):
        return limits.max_devices_with_taints_or_counters
    return limits.max_devices


def consumed_counters(devices: Sequence[Device]) -> int:
    return sum(len(use["counters"]) for device in devices for use in device.get("consumesCounters", ()))
