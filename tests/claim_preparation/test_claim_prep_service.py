"""claim_preparation on a real nats-server, the standalone store and a simulated machine: the main paths."""

from __future__ import annotations

import json
from pathlib import Path

from libs.bus import Bus
from libs.devices.model import TimeSliceInterval
from libs.kube import ClusterKube, KubeApi
from libs.natsserver import EmbeddedNats
from services.claim_preparation.service import ClaimService
from services.claim_preparation.settings import Settings
from tests.claim_preparation.claim_prep_support import (
    DYNAMIC_MIG,
    STATIC_MIG,
    EventLog,
    cdi_files,
    gpu_config,
    machine,
    opaque,
    prepare,
    schema,
    service_settings,
    serving,
    sim_state,
    store_claim,
    unprepare,
    until_answering,
)
from tests.support.kubeapi import KubeApiServer


async def test_full_gpu_prepared_with_a_valid_cdi_spec(
    bus: Bus, kube: KubeApi, service: ClaimService, settings: Settings, events: EventLog
) -> None:
    ref = await store_claim(kube, "train-0", [("gpu", "gpu-4")])
    reply = await prepare(bus, ref)
    result = reply.results[ref.uid]
    assert result.error == ""
    [device] = result.devices
    assert (device.pool, device.device, device.request_names) == ("node-a", "gpu-4", ["gpu"])
    assert device.cdi_device_ids == [f"k8s.gpu.gpudra.io/claim={ref.uid}-gpu-4"]
    [spec_file] = cdi_files(settings)
    assert spec_file.name == f"k8s.gpu.gpudra.io-claim_{ref.uid}.json"
    spec = json.loads(spec_file.read_text())
    schema().check(spec)
    assert spec["kind"] == "k8s.gpu.gpudra.io/claim"
    [cdi_device] = spec["devices"]
    assert cdi_device["name"] == f"{ref.uid}-gpu-4"
    nodes = [n["path"] for n in cdi_device["containerEdits"]["deviceNodes"]]
    assert nodes == ["/dev/nvidia4"]
    host = Path(settings.simulated_state).absolute()
    assert cdi_device["containerEdits"]["deviceNodes"][0]["hostPath"] == f"{host}/dev/nvidia4"
    assert spec["cdiVersion"] == "0.5.0"  # hostPath needs 0.5.0
    assert "NVIDIA_VISIBLE_DEVICES=void" in spec["containerEdits"]["env"]
    prepared = await events.next("ClaimPrepared")
    assert prepared["claim"]["uid"] == ref.uid
    assert {"lookup", "config", "wait", "checkpoint", "apply", "cdi", "total"} <= set(prepared["timings_ms"])

    assert (await unprepare(bus, ref)).results[ref.uid].error == ""
    assert cdi_files(settings) == []
    unprepared = await events.next("ClaimUnprepared")
    assert unprepared["timings_ms"]["total"] > 0


async def test_static_mig_device_is_used_and_kept(
    bus: Bus, kube: KubeApi, service: ClaimService, settings: Settings
) -> None:
    ref = await store_claim(kube, "mig-0", [("mig", STATIC_MIG)])
    before = await (await machine(settings)).inventory()
    [device] = (await prepare(bus, ref)).results[ref.uid].devices
    assert device.device == STATIC_MIG
    spec = json.loads(cdi_files(settings)[0].read_text())
    schema().check(spec)
    paths = [n["path"] for n in spec["devices"][0]["containerEdits"]["deviceNodes"]]
    static = next(d for d in before.mig_devices if d.name == STATIC_MIG)
    gi_cap = 3 + static.gi_id * 9
    assert paths == ["/dev/nvidia0", f"/dev/nvidia-caps/nvidia-cap{gi_cap}", f"/dev/nvidia-caps/nvidia-cap{gi_cap + 1}"]
    assert (await unprepare(bus, ref)).results[ref.uid].error == ""
    after = await (await machine(settings)).inventory()
    assert after.mig_devices == before.mig_devices  # static MIG devices are not ours to destroy
    assert cdi_files(settings) == []


async def test_dynamic_mig_device_created_at_prepare_destroyed_at_unprepare(
    bus: Bus, kube: KubeApi, service: ClaimService, settings: Settings
) -> None:
    sim = await machine(settings)
    before = await sim.inventory()
    assert DYNAMIC_MIG not in {d.name for d in before.mig_devices}
    ref = await store_claim(kube, "dyn-0", [("mig", DYNAMIC_MIG)])
    result = (await prepare(bus, ref)).results[ref.uid]
    assert result.error == ""
    created = next(d for d in (await sim.inventory()).mig_devices if d.name == DYNAMIC_MIG)
    spec = json.loads(cdi_files(settings)[0].read_text())
    schema().check(spec)
    caps = [n["path"] for n in spec["devices"][0]["containerEdits"]["deviceNodes"]][1:]
    first = 3 + 3 * 135 + created.gi_id * 9
    assert caps == [f"/dev/nvidia-caps/nvidia-cap{first}", f"/dev/nvidia-caps/nvidia-cap{first + 1 + created.ci_id}"]
    assert (await unprepare(bus, ref)).results[ref.uid].error == ""
    assert (await sim.inventory()).mig_devices == before.mig_devices
    assert cdi_files(settings) == []
    assert service.preparer.records == {}


async def test_time_slicing_interval_set_and_reset(
    bus: Bus, kube: KubeApi, service: ClaimService, settings: Settings
) -> None:
    config = gpu_config(strategy="TimeSlicing", timeSlicingConfig={"interval": "Long"})
    ref = await store_claim(kube, "ts-0", [("gpu", "gpu-5")], [opaque(config)])
    assert (await prepare(bus, ref)).results[ref.uid].error == ""
    assert sim_state(settings).sims[5].time_slice == TimeSliceInterval.LONG
    assert (await unprepare(bus, ref)).results[ref.uid].error == ""
    assert sim_state(settings).sims[5].time_slice == TimeSliceInterval.DEFAULT


async def test_mps_daemon_per_claim_with_pipe_and_shm(
    bus: Bus, kube: KubeApi, service: ClaimService, settings: Settings
) -> None:
    mps = {
        "defaultActiveThreadPercentage": 40,
        "defaultPinnedDeviceMemoryLimit": "8Gi",
        "defaultPerDevicePinnedMemoryLimit": {"1": "4Gi"},
    }
    config = gpu_config(strategy="MPS", mpsConfig=mps)
    ref = await store_claim(kube, "mps-0", [("gpu", "gpu-6"), ("gpu", "gpu-7")], [opaque(config)])
    assert (await prepare(bus, ref)).results[ref.uid].error == ""
    daemon_dir = settings.mps_path.absolute() / ref.uid / "0"
    record = json.loads((daemon_dir / "daemon.json").read_text())
    assert record["active_thread_percentage"] == 40
    assert record["pinned_limits"] == {"gpu-6": 8 * 2**30, "gpu-7": 4 * 2**30}
    state = sim_state(settings)
    assert state.sims[6].mps is not None
    assert state.sims[6].mps.pipe_directory == str(daemon_dir / "pipe")
    assert state.sims[7].mps is not None
    assert state.sims[7].mps.pinned_memory_limit_bytes == 4 * 2**30
    spec = json.loads(cdi_files(settings)[0].read_text())
    schema().check(spec)
    for device in spec["devices"]:
        edits = device["containerEdits"]
        assert edits["env"] == ["CUDA_MPS_PIPE_DIRECTORY=/tmp/nvidia-mps"]
        mounts = {m["containerPath"]: m["hostPath"] for m in edits["mounts"]}
        assert mounts == {"/tmp/nvidia-mps": str(daemon_dir / "pipe"), "/dev/shm": str(daemon_dir / "shm")}
    assert (await unprepare(bus, ref)).results[ref.uid].error == ""
    assert not daemon_dir.exists()
    state = sim_state(settings)
    assert state.sims[6].mps is None
    assert state.sims[7].mps is None


async def test_against_the_api_server_through_the_cluster_adapter(
    bus: Bus, nats_server: EmbeddedNats, settings: Settings, kube_api: KubeApiServer
) -> None:
    cluster = await ClusterKube.connect(kube_api.url)
    try:
        ref = await store_claim(cluster, "cluster-0", [("gpu", "gpu-4")])  # validated by the server's schemas
        async with serving(nats_server.url, settings, kube=cluster):
            await until_answering(bus)
            result = (await prepare(bus, ref)).results[ref.uid]
            assert [d.device for d in result.devices] == ["gpu-4"]
            assert (await unprepare(bus, ref)).results[ref.uid].error == ""
    finally:
        await cluster.close()


async def test_static_mig_mode_creates_no_mig_device(
    tmp_path: Path, bus: Bus, nats_server: EmbeddedNats, kube: KubeApi
) -> None:
    static = service_settings(tmp_path, nats_server.url, mig_mode="static")
    ref = await store_claim(kube, "dyn-static", [("mig", DYNAMIC_MIG)])
    async with serving(nats_server.url, static):
        await until_answering(bus)
        error = (await prepare(bus, ref)).results[ref.uid].error
    assert error.endswith(
        f"MIG device {DYNAMIC_MIG} does not exist, and MIG devices are created only in dynamic MIG mode"
    )
    assert DYNAMIC_MIG not in {d.name for d in (await (await machine(static)).inventory()).mig_devices}
