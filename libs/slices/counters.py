"""Shared counters for dynamic MIG (KEP-4815 partitionable devices): one counter set per GPU.

Every MIG partition of a GPU and the GPU itself consume from the GPU's counter set, so the scheduler
cannot hand out two things that need the same hardware. Memory slices are the real guard (a GPU instance
takes the memory slices [start, start + size) of its placement); the engine and memory counters add the
limits placements alone do not express, such as the single media-extension (`+me`) instance.

Counter names must be DNS labels (lowercase, dashes), unlike capacity names: `copy-engines` here is the
`copyEngines` capacity.
"""

from collections.abc import Sequence

from libs.devices.model import Gpu, MigPlacement, MigProfile, mig_totals
from libs.slices.quantity import format_quantity


def counter_set_name(minor: int) -> str:
    return f"gpu-{minor}-counter-set"


_COUNTERS = {
    "multiprocessors": "multiprocessors",
    "copy_engines": "copy-engines",
    "decoders": "decoders",
    "encoders": "encoders",
    "jpeg_engines": "jpeg-engines",
    "ofa_engines": "ofa-engines",
    "memory_bytes": "memory",
}


def profile_usage(profile: MigProfile) -> dict[str, int]:
    return {_COUNTERS[name]: value for name, value in profile.resources().items()}


def memory_slices(profiles: Sequence[MigProfile]) -> int:
    return max((placement.end for profile in profiles for placement in profile.placements), default=0)


def capacity(gpu: Gpu, profiles: tuple[MigProfile, ...]) -> dict[str, int]:
    """The GPU's MIG totals (the same the hardware model enforces) plus one of each memory slice; zero
    counters are left out, as nothing consumes them."""
    totals = {_COUNTERS[name]: value for name, value in mig_totals(gpu.memory_bytes, profiles).items()}
    totals.update({f"memory-slice-{i}": 1 for i in range(memory_slices(profiles))})
    return {name: value for name, value in totals.items() if value}


def counter_set(gpu: Gpu, profiles: tuple[MigProfile, ...]) -> dict[str, object]:
    return {"name": counter_set_name(gpu.minor), "counters": _quantities(capacity(gpu, profiles))}


def partition_consumption(minor: int, profile: MigProfile, placement: MigPlacement) -> list[dict[str, object]]:
    usage = {name: value for name, value in profile_usage(profile).items() if value}
    usage.update({f"memory-slice-{i}": 1 for i in range(placement.start, placement.end)})
    return [{"counterSet": counter_set_name(minor), "counters": _quantities(usage)}]


def whole_gpu_consumption(gpu: Gpu, profiles: tuple[MigProfile, ...]) -> list[dict[str, object]]:
    """The full GPU takes everything, so no partition fits beside it, nor it beside any partition."""
    return [{"counterSet": counter_set_name(gpu.minor), "counters": _quantities(capacity(gpu, profiles))}]


def _quantities(values: dict[str, int]) -> dict[str, dict[str, str]]:
    return {name: {"value": format_quantity(value)} for name, value in values.items()}
