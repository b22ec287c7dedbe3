"""The counter sets of dynamic MIG against the GPU's own placement rules, for every GPU model we know.

If a counter were too small, the scheduler would refuse a MIG layout the GPU accepts; if memory slices
did not mirror placements, it would allow two partitions the GPU cannot hold at once.
"""

from collections.abc import Iterator

import pytest

from libs.devices.errors import DeviceError
from libs.devices.model import Gpu, MigDevice, MigProfile
from libs.devices.simulated.catalogue import gpu_models
from libs.devices.simulated.machine import MachineProfile, build_hardware, create_mig_device
from libs.devices.simulated.mig import GpuLayout
from libs.slices import counters


def distinct_models() -> list[str]:
    """One model per distinct MIG table (the PCIe and SXM A100s share theirs, GB200 borrows B200's)."""
    tables = {(m.memory_bytes, m.mig_profiles): name for name, m in sorted(gpu_models().items(), reverse=True)}
    return sorted(tables.values())


def mig_gpu(model: str) -> Gpu:
    profile = MachineProfile(name="t", gpu_model=model, gpu_count=1, mig_enabled="all")
    return build_hardware("node-a", profile).gpus[0]


def layouts(layout: GpuLayout, options: list[tuple[str, int]]) -> Iterator[tuple[MigDevice, ...]]:
    """Every set of MIG devices the GPU accepts. An option the GPU refuses now it refuses in every larger
    layout too (placements only fill up), so each level tries only what its parent could still add."""
    yield layout.devices
    feasible = []
    for option in options:
        try:
            feasible.append((option, create_mig_device(layout, *option)))
        except DeviceError:
            continue
    for i, (_, device) in enumerate(feasible):
        grown = GpuLayout(node=layout.node, gpu=layout.gpu, profiles=layout.profiles, devices=(*layout.devices, device))
        yield from layouts(grown, [option for option, _ in feasible[i + 1 :]])


def usage(devices: tuple[MigDevice, ...]) -> dict[str, int]:
    total: dict[str, int] = {}
    for device in devices:
        for name, value in counters.profile_usage(device.profile).items():
            total[name] = total.get(name, 0) + value
        for i in range(device.placement.start, device.placement.end):
            total[f"memory-slice-{i}"] = total.get(f"memory-slice-{i}", 0) + 1
    return total


@pytest.mark.parametrize("model", distinct_models())
def test_counters_admit_every_layout_the_gpu_accepts(model: str) -> None:
    gpu = mig_gpu(model)
    profiles: tuple[MigProfile, ...] = gpu_models()[model].mig_profiles
    capacity = counters.capacity(gpu, profiles)
    options = [(p.name, pl.start) for p in profiles for pl in p.placements]
    seen = 0
    for devices in layouts(GpuLayout(node="node-a", gpu=gpu, profiles=profiles, devices=()), options):
        seen += 1
        for name, used in usage(devices).items():
            assert used <= capacity.get(name, 0), f"{model}: {[d.name for d in devices]} needs {used} {name}"
    assert seen > 50


@pytest.mark.parametrize("model", sorted(gpu_models()))
def test_overlapping_placements_share_a_memory_slice_counter(model: str) -> None:
    profiles = gpu_models()[model].mig_profiles
    placed = [(p, pl) for p in profiles for pl in p.placements]
    for a, pa in placed:
        for b, pb in placed:
            shared = set(range(pa.start, pa.end)) & set(range(pb.start, pb.end))
            assert bool(shared) == pa.overlaps(pb), f"{model}: {a.name}@{pa.start} / {b.name}@{pb.start}"
