"""Crash safety: kill -9 at each point of prepare and unprepare, a reboot, a damaged checkpoint, stale claims."""

from __future__ import annotations

from pathlib import Path

import pytest

from libs.bus import Bus
from libs.devices.errors import DeviceError
from libs.devices.model import MigDevice, MpsSettings
from libs.devices.simulated import SimulatedBackend
from libs.kube import RESOURCE_CLAIMS, KubeApi
from libs.natsserver import EmbeddedNats
from services.claim_preparation.settings import Settings
from tests.claim_preparation.claim_prep_crash_child import POINTS
from tests.claim_preparation.claim_prep_crash_support import claim_events, crash_at
from tests.claim_preparation.claim_prep_support import (
    DYNAMIC_MIG,
    cdi_files,
    machine,
    mig_config,
    opaque,
    open_machine,
    prepare,
    serving,
    sim_state,
    store_claim,
    unprepare,
    until_answering,
)

MPS_MIG = [opaque(mig_config(strategy="MPS", mpsConfig={"defaultActiveThreadPercentage": 50}))]


def _clean(settings: Settings) -> None:
    """Nothing of the claim is left on the node."""
    assert cdi_files(settings) == []
    assert not any(settings.mps_path.glob("*/*"))
    assert sim_state(settings).sims[3].mps is None
    assert list((settings.checkpoint_path / "claims").glob("*.json")) == []


@pytest.mark.parametrize("point", POINTS)
async def test_kill_9_at_any_point_leaves_a_node_the_next_start_makes_consistent(
    point: str, *, tmp_path: Path, nats_server: EmbeddedNats, bus: Bus, kube: KubeApi, settings: Settings
) -> None:
    ref = await store_claim(kube, "crash-0", [("mig", DYNAMIC_MIG)], MPS_MIG)
    await crash_at(point, nats_server.url, tmp_path, ref)
    async with serving(nats_server.url, settings) as service:
        await until_answering(bus)
        mig_names = {d.name for d in (await (await machine(settings)).inventory()).mig_devices}
        if point == "completed":
            assert set(service.preparer.records) == {ref.uid}  # it was prepared: it stays prepared
            assert DYNAMIC_MIG in mig_names
            assert len(cdi_files(settings)) == 1
        else:
            assert service.preparer.records == {}  # half done: rolled back at start
            assert DYNAMIC_MIG not in mig_names
            _clean(settings)
        result = (await prepare(bus, ref)).results[ref.uid]
        assert result.error == ""
        assert [d.device for d in result.devices] == [DYNAMIC_MIG]
        assert (await unprepare(bus, ref)).results[ref.uid].error == ""
        _clean(settings)
        assert DYNAMIC_MIG not in {d.name for d in (await (await machine(settings)).inventory()).mig_devices}


async def test_a_reboot_resets_the_checkpoint(
    tmp_path: Path, nats_server: EmbeddedNats, bus: Bus, kube: KubeApi, settings: Settings
) -> None:
    ref = await store_claim(kube, "boot-0", [("gpu", "gpu-4")])
    async with serving(nats_server.url, settings):
        await until_answering(bus)
        assert (await prepare(bus, ref)).results[ref.uid].error == ""
    Path(settings.boot_id_path).write_text("boot-2\n")
    async with serving(nats_server.url, settings) as service:
        await until_answering(bus)
        assert service.preparer.records == {}
        assert cdi_files(settings) == []
        assert (await prepare(bus, ref)).results[ref.uid].error == ""  # the kubelet prepares again after a reboot
        assert [r.boot_id for r in service.preparer.records.values()] == ["boot-2"]
    # Whoever follows the claim's events sees the reboot release it, then the new prepare.
    kinds = [e.kind for e in await claim_events(bus.js) if e.uid == ref.uid]
    assert kinds == ["ClaimPrepared", "ClaimUnprepared", "ClaimPrepared"]


async def test_a_damaged_record_is_set_aside_and_its_claim_prepared_afresh(
    nats_server: EmbeddedNats, bus: Bus, kube: KubeApi, settings: Settings
) -> None:
    ref = await store_claim(kube, "damaged-0", [("gpu", "gpu-4")])
    async with serving(nats_server.url, settings):
        await until_answering(bus)
        assert (await prepare(bus, ref)).results[ref.uid].error == ""
    record = settings.checkpoint_path / "claims" / f"{ref.uid}.json"
    record.write_bytes(record.read_bytes().replace(b"gpu-4", b"gpu-5"))  # decodes, but the checksum says no
    async with serving(nats_server.url, settings) as service:
        await until_answering(bus)
        assert service.preparer.records == {}
        assert record.with_name(record.name + ".corrupt").exists()
        assert cdi_files(settings) == []  # its spec belonged to no known claim any more
        assert (await prepare(bus, ref)).results[ref.uid].error == ""


class FlakyMachine(SimulatedBackend):
    """The simulated machine with switchable failures: MPS refused, MIG devices that will not go."""

    refuse_mps = False
    keep_mig = False

    async def start_mps(self, minor: int, settings: MpsSettings) -> None:
        if self.refuse_mps:
            raise DeviceError(self.node, f"gpu-{minor}", "cannot set exclusive-process compute mode")
        await super().start_mps(minor, settings)

    async def destroy_mig_device(self, device: MigDevice) -> None:
        if self.keep_mig:
            raise DeviceError(self.node, device.name, "the GPU instance is in use")
        await super().destroy_mig_device(device)


async def test_a_failed_rollback_stays_recorded_until_cleanup_finds_the_claim_gone(
    nats_server: EmbeddedNats, bus: Bus, kube: KubeApi, settings: Settings
) -> None:
    ref = await store_claim(kube, "stale-0", [("mig", DYNAMIC_MIG)], MPS_MIG)
    flaky = await open_machine(FlakyMachine, settings)
    async with serving(nats_server.url, settings, backend=flaky) as service:
        await until_answering(bus)
        flaky.refuse_mps = flaky.keep_mig = True
        error = (await prepare(bus, ref)).results[ref.uid].error
        assert "cannot set exclusive-process compute mode" in error
        assert "rolling back failed too: destroying MIG device gpu-3-mig-3g40gb-9-0" in error
        assert service.preparer.records[ref.uid].state == "PrepareStarted"
        flaky.refuse_mps = flaky.keep_mig = False
        assert await service.preparer.cleanup() == 0  # the claim still exists: the kubelet's retry will redo it
        await kube.delete(RESOURCE_CLAIMS, ref.name, ref.namespace)
        assert await service.preparer.cleanup() == 1
        assert service.preparer.records == {}
        assert DYNAMIC_MIG not in {d.name for d in (await flaky.inventory()).mig_devices}
        _clean(settings)


async def test_a_failed_rollback_is_retried_by_the_next_prepare(
    nats_server: EmbeddedNats, bus: Bus, kube: KubeApi, settings: Settings
) -> None:
    ref = await store_claim(kube, "retry-0", [("mig", DYNAMIC_MIG)], MPS_MIG)
    flaky = await open_machine(FlakyMachine, settings)
    async with serving(nats_server.url, settings, backend=flaky) as service:
        await until_answering(bus)
        flaky.refuse_mps = flaky.keep_mig = True
        assert (await prepare(bus, ref)).results[ref.uid].error
        flaky.refuse_mps = flaky.keep_mig = False
        result = (await prepare(bus, ref)).results[ref.uid]
        assert result.error == ""
        assert service.preparer.records[ref.uid].state == "PrepareCompleted"


async def test_a_record_from_a_newer_gpudra_is_neither_used_nor_overwritten(
    tmp_path: Path, nats_server: EmbeddedNats, bus: Bus, kube: KubeApi, settings: Settings
) -> None:
    ref = await store_claim(kube, "future-0", [("gpu", "gpu-4")])
    async with serving(nats_server.url, settings):
        await until_answering(bus)
        assert (await prepare(bus, ref)).results[ref.uid].error == ""
    record = settings.checkpoint_path / "claims" / f"{ref.uid}.json"
    newer = record.read_bytes().replace(b'"version":1', b'"version":2')
    record.write_bytes(newer)
    async with serving(nats_server.url, settings) as service:
        await until_answering(bus)
        assert service.preparer.records == {}
        for reply in ((await prepare(bus, ref)).results, (await unprepare(bus, ref)).results):
            assert "written by a newer gpudra" in reply[ref.uid].error
        assert len(cdi_files(settings)) == 1  # its spec stays with it
    assert record.read_bytes() == newer
