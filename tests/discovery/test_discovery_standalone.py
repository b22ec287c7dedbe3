"""Discovery against a real nats-server with simulated GPUs and the standalone Kubernetes store."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from libs.bus import Bus, CommandError
from libs.devices.nvml import NvmlBackend
from libs.devices.nvml.library import NvmlLibrary
from libs.devices.pci import bind_to_vfio
from libs.devices.simulated import SimulatedBackend
from libs.events.catalogue import InjectFault, InjectFaultReply, InventoryChanged, SlicesPublished
from libs.kube import LocalKube
from libs.natsserver import EmbeddedNats
from libs.slices import DeviceTaint
from services.discovery.faults import FaultInjector
from tests.discovery.discovery_support import (
    NODE,
    InventoryEvents,
    bus_writes,
    discovery_process,
    discovery_settings,
    node_slices,
    slice_devices,
    stored_inventory,
)

GPUS = [f"gpu-{i}" for i in range(8)]


async def inject(bus: Bus, device: str, kind: Any) -> InjectFaultReply:
    return await bus.request(NODE, InjectFault(device=device, kind=kind), InjectFaultReply)


async def test_start_stores_the_inventory_announces_it_and_publishes_the_slices(
    nats_server: EmbeddedNats, bus: Bus, tmp_path: Path
) -> None:
    events = await InventoryEvents.subscribe(bus)
    async with discovery_process(discovery_settings(nats_server.url, tmp_path)) as discovery:
        changed = await events.next(InventoryChanged)
        published = await events.next(SlicesPublished)
        inventory, raw = await stored_inventory(bus)
        slices = await node_slices(discovery.kube.api)
    assert (changed.reason, changed.generation, changed.device_count, changed.added) == ("start", 1, 8, GPUS)
    assert [gpu.name for gpu in inventory.gpus] == GPUS
    assert (raw["generation"], raw["reason"], inventory.backend) == (1, "start", "simulated")
    assert (published.pool, published.slice_count, published.device_count, published.created) == (NODE, 1, 8, 1)
    assert slice_devices(slices) == GPUS
    [owner] = slices[0]["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["controller"]) == ("Node", NODE, True)
    assert (tmp_path / "state" / "simulated" / "state.json").exists()


async def test_a_lost_gpu_leaves_inventory_and_slices_and_comes_back(
    nats_server: EmbeddedNats, bus: Bus, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    events = await InventoryEvents.subscribe(bus)
    async with discovery_process(discovery_settings(nats_server.url, tmp_path)) as discovery:
        await events.next(SlicesPublished)

        assert await inject(bus, "gpu-3", "gpu-lost") == InjectFaultReply(device="gpu-3", kind="gpu-lost")
        lost = await events.next(InventoryChanged)
        shrunk = await events.next(SlicesPublished)
        inventory, raw = await stored_inventory(bus)
        slices = await node_slices(discovery.kube.api)
        assert (lost.reason, lost.generation, lost.removed, lost.device_count) == ("device-lost", 2, ["gpu-3"], 7)
        assert "gpu-3" not in [gpu.name for gpu in inventory.gpus]
        assert raw["generation"] == 2
        assert slice_devices(slices) == [g for g in GPUS if g != "gpu-3"]
        assert (shrunk.generation, shrunk.updated, shrunk.device_count) == (2, 1, 7)
        assert {s["spec"]["pool"]["generation"] for s in slices} == {2}
        skips = [r for r in caplog.records if getattr(r, "device", None) == "gpu-3" and r.levelno == logging.WARNING]
        assert {r.getMessage() for r in skips} >= {
            "leaving a lost GPU out of the inventory",
            "device gone from the inventory",
        }

        await inject(bus, "gpu-3", "gpu-back")
        back = await events.next(InventoryChanged)
        await events.next(SlicesPublished)
        assert (back.reason, back.generation, back.added, back.device_count) == ("device-back", 3, ["gpu-3"], 8)
        assert slice_devices(await node_slices(discovery.kube.api)) == GPUS


async def test_a_gpu_a_vm_holds_stays_published_across_a_restart_of_discovery(
    nats_server: EmbeddedNats, bus: Bus, tmp_path: Path
) -> None:
    """The driver stops listing a GPU on vfio-pci; a discovery that starts meanwhile has never seen it listed and
    keeps it from the inventory it stored before, so the slices do not lose it while a VM claim holds it."""
    settings = discovery_settings(nats_server.url, tmp_path, passthrough_gpus="all")
    events = await InventoryEvents.subscribe(bus)
    async with discovery_process(settings):
        await events.next(SlicesPublished)
    machine = await SimulatedBackend.open(NODE, settings.simulated_state)
    gpu = next(g for g in (await machine.inventory()).gpus if g.minor == 2)
    await bind_to_vfio(machine.pci(), gpu.pci_bus_id, timeout=5)
    fresh = await SimulatedBackend.open(NODE, settings.simulated_state)  # as a process started now lists GPUs
    assert 2 not in [g.minor for g in (await fresh.inventory()).gpus]
    async with discovery_process(settings) as discovery:
        await events.next(SlicesPublished)
        inventory, _ = await stored_inventory(bus)
        assert [g.minor for g in inventory.gpus] == list(range(8))
        published = slice_devices(await node_slices(discovery.kube.api))
        assert {"gpu-2", "gpu-2-vfio"} <= set(published)


async def test_an_unchanged_resync_writes_nothing(nats_server: EmbeddedNats, bus: Bus, tmp_path: Path) -> None:
    events = await InventoryEvents.subscribe(bus)
    async with discovery_process(discovery_settings(nats_server.url, tmp_path)) as discovery:
        await events.next(SlicesPublished)
        before = await bus_writes(bus)
        assert await discovery.reconciler.sync() is True
        assert await bus_writes(bus) == before
    assert events.pending() == 0


async def test_the_period_finds_what_no_event_reports(nats_server: EmbeddedNats, bus: Bus, tmp_path: Path) -> None:
    """A GPU that comes back raises no hardware event: only the periodic resync notices."""
    settings = discovery_settings(nats_server.url, tmp_path, resync_seconds=0.05)
    backend = await SimulatedBackend.open(NODE, settings.simulated_state, settings.profile)
    await backend.inject_gpu_lost(6)
    events = await InventoryEvents.subscribe(bus)
    async with discovery_process(settings):
        started = await events.next(InventoryChanged)
        assert "gpu-6" not in started.added
        await backend.restore_gpu(6)
        back = await events.next(InventoryChanged)
    assert (back.reason, back.added) == ("device-back", ["gpu-6"])


async def test_a_restart_announces_itself_without_rewriting_an_unchanged_inventory(
    nats_server: EmbeddedNats, bus: Bus, tmp_path: Path
) -> None:
    settings = discovery_settings(nats_server.url, tmp_path)
    events = await InventoryEvents.subscribe(bus)
    async with discovery_process(settings):
        await events.next(SlicesPublished)
    before = await bus_writes(bus)
    async with discovery_process(settings):
        restarted = await events.next(InventoryChanged)
        republished = await events.next(SlicesPublished)
    inventory_writes, kube_writes, _ = await bus_writes(bus)
    assert (restarted.reason, restarted.generation, restarted.added) == ("start", 1, [])
    assert (republished.generation, republished.created, republished.updated) == (1, 0, 0)
    assert (inventory_writes, kube_writes) == before[:2]


async def test_device_taints_from_the_health_bucket_are_published(
    nats_server: EmbeddedNats, bus: Bus, tmp_path: Path
) -> None:
    events = await InventoryEvents.subscribe(bus)
    async with discovery_process(discovery_settings(nats_server.url, tmp_path)) as discovery:
        await events.next(SlicesPublished)
        taint = DeviceTaint(key="gpu.gpudra.io/unhealthy", effect="NoSchedule", value="xid-79")
        health = await bus.kv("gpudra_health")
        await health.put(
            "node-a.taints",
            b'{"gpu-5": [{"key": "gpu.gpudra.io/unhealthy", "effect": "NoSchedule", "value": "xid-79"}]}',
        )
        published = await events.next(SlicesPublished)
        slices = await node_slices(discovery.kube.api)
    devices = {d["name"]: d for s in slices for d in s["spec"]["devices"]}
    assert devices["gpu-5"]["taints"] == [taint.as_dict()]
    assert published.updated == 1


async def test_fault_injection_refuses_unknown_devices_and_real_gpus(
    nats_server: EmbeddedNats, bus: Bus, tmp_path: Path
) -> None:
    async with discovery_process(discovery_settings(nats_server.url, tmp_path)):
        with pytest.raises(CommandError, match="node node-a: gpu-42: no such device") as unknown:
            await inject(bus, "gpu-42", "gpu-lost")
        with pytest.raises(CommandError, match="xid fault needs the xid number") as no_xid:
            await inject(bus, "gpu-1", "xid")
    assert (unknown.value.code, no_xid.value.code) == (404, 400)

    on_nvml = FaultInjector(NvmlBackend("node-a", Path("/sys"), NvmlLibrary(), 500), lambda why: None)
    with pytest.raises(CommandError, match="fault injection needs the simulated backend; this node runs nvml") as nvml:
        await on_nvml(InjectFault(device="gpu-0", kind="gpu-lost"))
    assert nvml.value.code == 501


async def test_the_store_holds_only_this_pool_and_reads_like_the_cli_reads_it(
    nats_server: EmbeddedNats, bus: Bus, tmp_path: Path
) -> None:
    events = await InventoryEvents.subscribe(bus)
    async with discovery_process(discovery_settings(nats_server.url, tmp_path)):
        await events.next(SlicesPublished)
    store = await LocalKube.open(bus.js)
    assert [s["metadata"]["name"] for s in await node_slices(store)] == ["node-a-gpu.gpudra.io-0"]
