"""The node agent end to end: simulated GPUs fail, HealthEvents arrive on a real nats-server; ResetGpu answers."""

from __future__ import annotations

from pathlib import Path

import pytest

from libs.bus import Bus, CommandError
from libs.devices.errors import DeviceNotFound
from libs.devices.pci import bind_to_vfio, restore_driver
from libs.devices.simulated import SimulatedBackend
from libs.events.catalogue.health import HealthEvent, MonitorStatusChanged, ResetGpu, ResetGpuReply
from tests.health_monitors.health_monitor_support import (
    NODE,
    MisbehavingBackend,
    health,
    running_agent,
    status_of,
    stored_health_events,
)


@pytest.fixture
async def sim(tmp_path: Path) -> SimulatedBackend:
    """Eight H100s; GPUs 0-2 carry MIG devices (mixed-mig), the rest are whole GPUs."""
    return await SimulatedBackend.open(NODE, tmp_path / "sim", "mixed-mig")


async def uuid_of(sim: SimulatedBackend, minor: int) -> str:
    return next(gpu.uuid for gpu in (await sim.inventory()).gpus if gpu.minor == minor)


async def test_xid_48_on_gpu_3_arrives_as_a_fatal_gpu_event(bus: Bus, sim: SimulatedBackend, tmp_path: Path) -> None:
    async with running_agent(bus, sim, tmp_path / "health") as feed:
        await sim.inject_xid("gpu-3", 48)
        envelope = await feed.expect(HealthEvent, health("xid", "gpu-3"))
    event = envelope.data
    assert event.node == NODE
    assert event.error_codes == ["48"]
    assert (event.entity.kind, event.entity.id) == ("gpu", await uuid_of(sim, 3))
    assert (event.component, event.fatal, event.recommended_action) == ("gpu", True, "COMPONENT_RESET")
    assert "double-bit ECC" in event.message
    assert envelope.subject == event.entity.id


async def test_an_xid_on_a_mig_device_names_the_mig_device(bus: Bus, sim: SimulatedBackend, tmp_path: Path) -> None:
    mig = next(d for d in (await sim.inventory()).mig_devices if d.parent_minor == 1)
    async with running_agent(bus, sim, tmp_path / "health") as feed:
        await sim.inject_xid(mig.name, 31)
        event = (await feed.expect(HealthEvent, health("xid", mig.name))).data
    assert (event.entity.kind, event.entity.id, event.component) == ("mig", mig.uuid, "mig")
    assert (event.error_codes, event.fatal, event.recommended_action) == (["31"], False, "NONE")


async def test_a_lost_gpu_is_reported_and_its_return_is_healthy(
    bus: Bus, sim: SimulatedBackend, tmp_path: Path
) -> None:
    async with running_agent(bus, sim, tmp_path / "health") as feed:
        await sim.inject_gpu_lost(5)
        lost = (await feed.expect(HealthEvent, health("gpu-lost", "gpu-5"))).data
        assert (lost.fatal, lost.recommended_action) == (True, "RESTART_BM")
        await sim.restore_gpu(5)
        back = (await feed.expect(HealthEvent, health("gpu-lost", "gpu-5", healthy=True))).data
    assert (back.fatal, back.recommended_action, back.entity) == (False, "NONE", lost.entity)


async def test_a_gpu_handed_to_a_vm_is_with_the_vm_not_lost_and_its_return_is_healthy(
    bus: Bus, sim: SimulatedBackend, tmp_path: Path
) -> None:
    """NVML loses a GPU on vfio-pci (the simulated backend's reads fail as NVML's do): no GPU lost, no fault, the
    informational ``passthrough`` condition while the VM has it."""
    pci = sim.pci()
    bus_id = next(gpu.pci_bus_id for gpu in (await sim.inventory()).gpus if gpu.minor == 5)
    async with running_agent(bus, sim, tmp_path / "health") as feed:
        await bind_to_vfio(pci, bus_id, timeout=5)
        with pytest.raises(DeviceNotFound):
            await sim.read_counters(5)
        with_vm = (await feed.expect(HealthEvent, health("passthrough", "gpu-5"))).data
        assert (with_vm.fatal, with_vm.recommended_action, with_vm.error_codes) == (False, "NONE", ["vm"])
        assert "gpu-5 is with a VM (bound to vfio-pci)" in with_vm.message
        await restore_driver(pci, bus_id, "nvidia", timeout=5)
        await feed.expect(HealthEvent, health("passthrough", "gpu-5", healthy=True))
    reported = [e.data for e in await stored_health_events(bus)]
    assert [e.check for e in reported if isinstance(e, HealthEvent) and e.entity.device == "gpu-5"] == [
        "passthrough",
        "passthrough",
    ]


async def test_an_ecc_counter_rise_is_polled_and_its_clearing_is_healthy(
    bus: Bus, sim: SimulatedBackend, tmp_path: Path
) -> None:
    async with running_agent(bus, sim, tmp_path / "health") as feed:
        await sim.inject_counters(4, ecc_volatile_uncorrected=2)
        fault = (await feed.expect(HealthEvent, health("ecc-counters", "gpu-4"))).data
        assert (fault.error_codes, fault.component, fault.fatal) == (["volatile-uncorrected"], "memory", True)
        assert "2 uncorrected" in fault.message
        await sim.inject_counters(4, ecc_volatile_uncorrected=3)
        worse = (await feed.expect(HealthEvent, health("ecc-counters", "gpu-4"))).data
        assert "3 uncorrected" in worse.message
        await sim.inject_counters(4, ecc_volatile_uncorrected=0)
        cleared = (await feed.expect(HealthEvent, health("ecc-counters", "gpu-4", healthy=True))).data
    assert cleared.error_codes == ["volatile-uncorrected"]


async def test_an_nvlink_link_down_is_its_own_entity_and_clears(
    bus: Bus, sim: SimulatedBackend, tmp_path: Path
) -> None:
    async with running_agent(bus, sim, tmp_path / "health") as feed:
        await sim.inject_nvlink_down(6, 2)
        down = (await feed.expect(HealthEvent, health("nvlink", "gpu-6"))).data
        assert (down.entity.kind, down.entity.id) == ("nvlink", f"{await uuid_of(sim, 6)}/nvlink-2")
        await sim.restore_nvlink(6, 2)
        up = (await feed.expect(HealthEvent, health("nvlink", "gpu-6", healthy=True))).data
    assert up.entity == down.entity


async def test_thermal_slowdown_is_reported_and_clears(bus: Bus, sim: SimulatedBackend, tmp_path: Path) -> None:
    async with running_agent(bus, sim, tmp_path / "health") as feed:
        await sim.inject_thermal(7, 95)
        hot = (await feed.expect(HealthEvent, health("thermal", "gpu-7"))).data
        assert (hot.component, hot.fatal) == ("thermal", False)
        await sim.clear_faults(7)
        await feed.expect(HealthEvent, health("thermal", "gpu-7", healthy=True))


async def test_a_hung_poll_makes_its_gpu_unmonitored_until_it_answers(
    bus: Bus, sim: SimulatedBackend, tmp_path: Path
) -> None:
    backend = MisbehavingBackend(sim)
    async with running_agent(bus, backend, tmp_path / "health") as feed:
        backend.hang_minor = 2
        down = (await feed.expect(MonitorStatusChanged, status_of("counters/gpu-2", monitored=False))).data
        assert [e.device for e in down.entities] == ["gpu-2"]
        assert "no answer" in down.reason
        fault = (await feed.expect(HealthEvent, health("monitor", "gpu-2"))).data
        assert (fault.component, fault.error_codes, fault.fatal) == (
            "monitor",
            ["unmonitored", "counters/gpu-2"],
            False,
        )

        backend.release.set()
        await feed.expect(MonitorStatusChanged, status_of("counters/gpu-2", monitored=True))
        await feed.expect(HealthEvent, health("monitor", "gpu-2", healthy=True))


async def test_a_broken_event_stream_unmonitors_every_gpu_then_resubscribes(
    bus: Bus, sim: SimulatedBackend, tmp_path: Path
) -> None:
    backend = MisbehavingBackend(sim)
    async with running_agent(bus, backend, tmp_path / "health") as feed:
        backend.break_stream = True
        await sim.inject_xid("gpu-4", 13)
        down = (await feed.expect(MonitorStatusChanged, status_of("device-events", monitored=False))).data
        assert "NVML event set broke" in down.reason
        assert {e.device for e in down.entities} == {f"gpu-{minor}" for minor in range(8)}
        await feed.expect(MonitorStatusChanged, status_of("device-events", monitored=True))
        await sim.inject_xid("gpu-4", 79)
        event = (await feed.expect(HealthEvent, health("xid", "gpu-4"))).data
    assert event.error_codes == ["79"]


async def test_reset_gpu_answers_with_its_duration_and_clears_the_xid(
    bus: Bus, sim: SimulatedBackend, tmp_path: Path
) -> None:
    async with running_agent(bus, sim, tmp_path / "health") as feed:
        await sim.inject_xid("gpu-3", 48)
        await feed.expect(HealthEvent, health("xid", "gpu-3"))
        reply = await bus.request(NODE, ResetGpu(device="gpu-3", reason="xid 48"), ResetGpuReply)
        cleared = (await feed.expect(HealthEvent, health("xid", "gpu-3", healthy=True))).data
    assert reply.device == "gpu-3"
    assert reply.duration_ms >= 0
    assert cleared.error_codes == ["48"]


@pytest.mark.parametrize(
    "case",
    [
        ("gpu-99", 404, "gpu-99: no such device"),
        ("fan-1", 404, "'fan-1': no such GPU"),
        ("gpu-1-mig-3g40gb-9-0", 400, "reset its GPU gpu-1"),
    ],
)
async def test_reset_of_a_device_that_is_not_a_gpu_here_is_a_coded_error_naming_it(
    bus: Bus, sim: SimulatedBackend, tmp_path: Path, case: tuple[str, int, str]
) -> None:
    device, code, says = case
    async with running_agent(bus, sim, tmp_path / "health"):
        with pytest.raises(CommandError) as raised:
            await bus.request(NODE, ResetGpu(device=device), ResetGpuReply)
    assert raised.value.code == code
    assert says in raised.value.message
    assert NODE in raised.value.message


async def test_a_restart_re_reports_with_the_same_id_and_clears_what_cleared_meanwhile(
    bus: Bus, sim: SimulatedBackend, tmp_path: Path
) -> None:
    state = tmp_path / "health"
    async with running_agent(bus, sim, state) as feed:
        await sim.inject_counters(6, row_remap_failed=True)
        await sim.inject_thermal(7, 95)
        first = await feed.expect(HealthEvent, health("row-remap", "gpu-6"))
        await feed.expect(HealthEvent, health("thermal", "gpu-7"))
    await sim.clear_faults(7)

    async with running_agent(bus, sim, state) as feed:
        again = await feed.expect(HealthEvent, health("row-remap", "gpu-6"))
        await feed.expect(HealthEvent, health("thermal", "gpu-7", healthy=True))
    assert again.id == first.id
    stored = [e.id for e in await stored_health_events(bus)]
    assert stored.count(first.id) == 1
