from pathlib import Path

import msgspec
import pytest

from libs.devices.errors import (
    DeviceNotFound,
    InsufficientResources,
    InvalidPlacement,
    MigDisabled,
    PlacementOccupied,
    UnknownMigProfile,
)
from libs.devices.model import MigPlacement, MigProfile
from libs.devices.simulated import SimulatedBackend, load_profile
from libs.devices.simulated.machine import build_hardware, create_mig_device
from libs.devices.simulated.mig import GpuLayout


@pytest.fixture
async def h100(tmp_path: Path) -> SimulatedBackend:
    return await SimulatedBackend.open("node-a", tmp_path / "sim", "dgx-h100-mig")


async def test_a_created_mig_device_is_in_the_inventory(h100: SimulatedBackend) -> None:
    device = await h100.create_mig_device(2, "3g.40gb", 4)
    assert device.name == "gpu-2-mig-3g40gb-9-4"
    assert (device.placement.start, device.placement.size) == (4, 4)
    assert device.uuid.startswith("MIG-")
    assert device.parent_uuid == (await h100.inventory()).gpus[2].uuid
    assert [d.name for d in (await h100.inventory()).mig_devices] == ["gpu-2-mig-3g40gb-9-4"]


async def test_overlapping_placements_are_refused_naming_the_holder(h100: SimulatedBackend) -> None:
    await h100.create_mig_device(0, "3g.40gb", 0)
    with pytest.raises(PlacementOccupied) as caught:
        await h100.create_mig_device(0, "1g.20gb", 2)
    message = str(caught.value)
    assert "node node-a: gpu-0" in message
    assert "gpu-0-mig-1g20gb-15-2" in message
    assert "held by gpu-0-mig-3g40gb-9-0" in message
    assert isinstance(caught.value, InsufficientResources)


async def test_adjacent_placements_fit(h100: SimulatedBackend) -> None:
    await h100.create_mig_device(0, "4g.40gb", 0)
    await h100.create_mig_device(0, "2g.20gb", 4)
    await h100.create_mig_device(0, "1g.10gb", 6)
    assert len((await h100.inventory()).mig_devices) == 3


async def test_a_start_that_is_not_a_placement_of_the_profile_is_refused(h100: SimulatedBackend) -> None:
    with pytest.raises(InvalidPlacement, match=r"valid starts are \[0, 4\]"):
        await h100.create_mig_device(0, "3g.40gb", 2)


async def test_the_media_extension_profile_allows_one_instance(h100: SimulatedBackend) -> None:
    await h100.create_mig_device(1, "1g.10gb+me", 0)
    with pytest.raises(InsufficientResources, match="allows 1"):
        await h100.create_mig_device(1, "1g.10gb+me", 3)


def test_compute_slices_are_a_limit_of_their_own() -> None:
    """Real tables never reach it before memory slices do; a table with 8 one-slice placements does."""
    gpu = build_hardware("node-a", load_profile("dgx-h100-mig")).gpus[0]
    one = MigProfile(
        name="1g.10gb",
        gi_profile_id=19,
        nvml_profile_index=0,
        slice_count=1,
        instance_count=8,
        multiprocessors=16,
        copy_engines=1,
        decoders=1,
        encoders=0,
        jpeg_engines=1,
        ofa_engines=0,
        memory_bytes=10 * 2**30,
        placements=tuple(MigPlacement(i, 1) for i in range(8)),
    )
    seven = msgspec.structs.replace(one, name="7g.80gb", gi_profile_id=0, slice_count=7, instance_count=1)
    layout = GpuLayout(node="node-a", gpu=gpu, profiles=(one, seven), devices=())
    for start in range(7):
        layout = msgspec.structs.replace(layout, devices=(*layout.devices, create_mig_device(layout, "1g.10gb", start)))
    with pytest.raises(InsufficientResources, match="7 of 7 compute slices"):
        layout.plan("1g.10gb", 7)


async def test_unknown_profiles_and_gpus_are_named(h100: SimulatedBackend) -> None:
    with pytest.raises(UnknownMigProfile, match=r"no MIG profile '5g.50gb'.*1g\.10gb"):
        await h100.create_mig_device(0, "5g.50gb", 0)
    with pytest.raises(DeviceNotFound, match="gpu-42"):
        await h100.create_mig_device(42, "1g.10gb", 0)


async def test_mig_mode_must_be_enabled(tmp_path: Path) -> None:
    backend = await SimulatedBackend.open("node-a", tmp_path / "sim", "dgx-h100")
    with pytest.raises(MigDisabled, match="node node-a: gpu-0: MIG mode is disabled"):
        await backend.create_mig_device(0, "1g.10gb", 0)


async def test_destroy_frees_the_placement_and_is_idempotent(h100: SimulatedBackend) -> None:
    device = await h100.create_mig_device(0, "7g.80gb", 0)
    await h100.destroy_mig_device(device)
    await h100.destroy_mig_device(device)
    assert (await h100.inventory()).mig_devices == ()
    again = await h100.create_mig_device(0, "7g.80gb", 0)
    assert again.uuid == device.uuid


async def test_gpu_instance_ids_are_the_lowest_free(h100: SimulatedBackend) -> None:
    first = await h100.create_mig_device(0, "1g.10gb", 0)
    second = await h100.create_mig_device(0, "1g.10gb", 1)
    await h100.destroy_mig_device(first)
    third = await h100.create_mig_device(0, "1g.10gb", 2)
    assert (first.gi_id, second.gi_id, third.gi_id) == (1, 2, 1)
