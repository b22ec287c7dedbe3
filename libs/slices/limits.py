"""ResourceSlice limits per Kubernetes minor version (the API server rejects a slice that breaks one).

1.34 keeps a device's counter sets in its own slice; from 1.35 counter sets live in counters-only slices
of the pool, and the device limit drops to 64 for a slice with taints or counter consumption.
"""

import msgspec

OLDEST_MINOR = 34


class SliceLimits(msgspec.Struct, frozen=True, kw_only=True):
    minor: int
    max_devices: int = 128
    max_devices_with_taints_or_counters: int
    max_taints_per_device: int
    separate_counter_slices: bool
    max_counter_sets_per_slice: int
    max_counters_per_slice: int
    max_counters_per_set: int = 32
    max_consumptions_per_device: int
    max_counters_per_consumption: int = 32
    max_counters_per_device: int
    max_consumed_counters_per_slice: int = 1024
    max_attributes_and_capacities: int = 32
    max_string_length: int = 64
    none_effect_allowed: bool


def limits_for(minor: int) -> SliceLimits:
    if minor < OLDEST_MINOR:
        raise ValueError(f"Kubernetes 1.{minor} has no resource.k8s.io/v1; gpudra needs 1.{OLDEST_MINOR} or newer")
    if minor == OLDEST_MINOR:
        return SliceLimits(
            minor=minor,
            max_devices_with_taints_or_counters=128,
            max_taints_per_device=4,
            separate_counter_slices=False,
            max_counter_sets_per_slice=32,
            max_counters_per_slice=32,
            max_consumptions_per_device=32,
            max_counters_per_device=32,
            none_effect_allowed=False,
        )
    return SliceLimits(
        minor=minor,
        max_devices_with_taints_or_counters=64,
        max_taints_per_device=16,
        separate_counter_slices=True,
        max_counter_sets_per_slice=8,
        max_counters_per_slice=8 * 32,
        max_consumptions_per_device=2,
        max_counters_per_device=64,
        none_effect_allowed=True,
    )
