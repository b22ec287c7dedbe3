import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from libs.devices.errors import DeviceLost, DeviceNotFound
from libs.devices.events import DeviceEvent, EccEvent, GpuLostEvent, RecoveryActionEvent, XidEvent
from libs.devices.model import MpsSettings, TimeSliceInterval
from libs.devices.simulated import SimulatedBackend


async def next_event(stream: AsyncIterator[DeviceEvent]) -> DeviceEvent:
    return await asyncio.wait_for(anext(stream), timeout=5)


@pytest.fixture
async def mixed(tmp_path: Path) -> SimulatedBackend:
    return await SimulatedBackend.open("node-a", tmp_path / "sim", "mixed-mig")


async def test_an_xid_on_a_gpu_reaches_the_event_stream(mixed: SimulatedBackend) -> None:
    events = mixed.events()
    await mixed.inject_xid("gpu-5", 79)
    event = await next_event(events)
    assert isinstance(event, XidEvent)
    assert (event.minor, event.xid, event.gpu_instance_id) == (5, 79, None)
    assert event.uuid == (await mixed.inventory()).gpus[5].uuid


async def test_an_xid_on_a_mig_device_carries_its_instance_ids(mixed: SimulatedBackend) -> None:
    mig = next(d for d in (await mixed.inventory()).mig_devices if d.name == "gpu-1-mig-2g20gb-14-4")
    events = mixed.events()
    await mixed.inject_xid(mig.name, 43)
    event = await next_event(events)
    assert isinstance(event, XidEvent)
    assert (event.minor, event.gpu_instance_id, event.compute_instance_id) == (1, mig.gi_id, mig.ci_id)


async def test_ecc_errors_count_and_a_double_bit_leaves_a_remap_pending(mixed: SimulatedBackend) -> None:
    events = mixed.events()
    await mixed.inject_ecc(4, count=3)
    await mixed.inject_ecc(4, double_bit=True)
    single, double = await next_event(events), await next_event(events)
    assert isinstance(single, EccEvent)
    assert not single.double_bit
    assert isinstance(double, EccEvent)
    assert double.double_bit
    counters = await mixed.read_counters(4)
    assert (counters.ecc_volatile_corrected, counters.ecc_aggregate_uncorrected) == (3, 1)
    assert counters.row_remap_pending


async def test_a_lost_gpu_leaves_the_inventory_and_refuses_work(
    mixed: SimulatedBackend, caplog: pytest.LogCaptureFixture
) -> None:
    events = mixed.events()
    await mixed.inject_gpu_lost(1)
    assert isinstance(await next_event(events), GpuLostEvent)
    with caplog.at_level(logging.WARNING):
        inventory = await mixed.inventory()
    assert "gpu-1" not in {g.name for g in inventory.gpus}
    assert not [d for d in inventory.mig_devices if d.parent_minor == 1]
    assert any(getattr(r, "device", None) == "gpu-1" for r in caplog.records)
    with pytest.raises(DeviceLost, match="node node-a: gpu-1"):
        await mixed.read_counters(1)
    await mixed.restore_gpu(1)
    assert "gpu-1" in {g.name for g in (await mixed.inventory()).gpus}


async def test_nvlink_down_shows_in_counters_and_raises_xid_74(mixed: SimulatedBackend) -> None:
    events = mixed.events()
    await mixed.inject_nvlink_down(6, 3)
    event = await next_event(events)
    assert isinstance(event, XidEvent)
    assert event.xid == 74
    links = (await mixed.read_counters(6)).nvlink_up
    assert len(links) == 18
    assert links[3] is False
    assert links.count(False) == 1
    await mixed.restore_nvlink(6, 3)
    assert all((await mixed.read_counters(6)).nvlink_up)
    with pytest.raises(DeviceNotFound, match="NVLink 40"):
        await mixed.inject_nvlink_down(6, 40)


async def test_thermal_and_other_counters_are_polled_not_evented(mixed: SimulatedBackend) -> None:
    await mixed.inject_thermal(7, 97)
    await mixed.inject_counters(7, pcie_replays=12, row_remap_failed=True)
    counters = await mixed.read_counters(7)
    assert (counters.temperature_c, counters.thermal_slowdown, counters.pcie_replays) == (97, True, 12)
    assert counters.row_remap_failed
    with pytest.raises(ValueError, match="unknown health counters"):
        await mixed.inject_counters(7, fan_speed=3)


async def test_recovery_action_events(mixed: SimulatedBackend) -> None:
    events = mixed.events()
    await mixed.inject_recovery_action(2, 1)
    event = await next_event(events)
    assert isinstance(event, RecoveryActionEvent)
    assert event.action == 1


async def test_a_reset_clears_faults_mig_devices_and_sharing(mixed: SimulatedBackend) -> None:
    await mixed.inject_ecc(0, double_bit=True)
    await mixed.inject_thermal(0)
    await mixed.set_time_slice(0, TimeSliceInterval.LONG)
    await mixed.start_mps(0, MpsSettings(pipe_directory="/run/mps"))
    await mixed.reset_gpu(0)
    counters = await mixed.read_counters(0)
    assert not counters.row_remap_pending
    assert not counters.thermal_slowdown
    assert counters.ecc_volatile_uncorrected == 0
    assert counters.ecc_aggregate_uncorrected == 1
    assert not [d for d in (await mixed.inventory()).mig_devices if d.parent_minor == 0]


async def test_a_sticky_fault_survives_a_reset_until_repaired(mixed: SimulatedBackend) -> None:
    await mixed.inject_thermal(3, 99, sticky=True)
    await mixed.reset_gpu(3)
    assert (await mixed.read_counters(3)).thermal_slowdown
    await mixed.clear_faults(3)
    assert not (await mixed.read_counters(3)).thermal_slowdown


async def test_the_profile_can_make_every_fault_sticky(tmp_path: Path) -> None:
    path = tmp_path / "sticky.yaml"
    path.write_text("name: sticky\ngpu_model: H100-SXM5-80GB\ngpu_count: 1\nsticky_faults: true\n")
    backend = await SimulatedBackend.open("node-a", tmp_path / "sim", str(path))
    await backend.inject_gpu_lost(0)
    await backend.reset_gpu(0)
    assert (await backend.inventory()).gpus == ()


async def test_a_subscription_starts_now_and_does_not_replay(mixed: SimulatedBackend) -> None:
    await mixed.inject_xid(0, 13)
    events = mixed.events()
    await mixed.inject_xid(0, 31)
    event = await next_event(events)
    assert isinstance(event, XidEvent)
    assert event.xid == 31


async def test_every_subscriber_sees_every_event(mixed: SimulatedBackend) -> None:
    first, second = mixed.events(), mixed.events()
    await mixed.inject_xid(2, 48)
    await mixed.inject_xid(2, 64)
    assert [e.xid for e in [await next_event(first), await next_event(first)] if isinstance(e, XidEvent)] == [48, 64]
    assert isinstance(await next_event(second), XidEvent)
