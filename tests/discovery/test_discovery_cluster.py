"""Discovery publishing through the cluster adapter to the Kubernetes API test server (which validates every
slice against the Kubernetes schemas), on simulated GPUs in dynamic MIG mode: one slice per GPU on 1.34."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from libs.bus import Bus
from libs.events.catalogue import InjectFault, InjectFaultReply, InventoryChanged, SlicesPublished
from libs.natsserver import EmbeddedNats
from services.discovery.settings import Settings
from tests.discovery.discovery_support import (
    NODE,
    InventoryEvents,
    discovery_process,
    discovery_settings,
    slice_devices,
)
from tests.support.kubeapi import KubeApiServer

SLICES = "resourceslices"


def cluster_settings(nats_server: EmbeddedNats, kube_api: KubeApiServer, tmp_path: Path) -> Settings:
    return discovery_settings(
        nats_server.url,
        tmp_path,
        kube_mode="cluster",
        kubeconfig=kube_api.url,
        profile="dgx-h100-mig",
        mig_mode="dynamic",
    )


def add_node(kube_api: KubeApiServer) -> str:
    node = kube_api.store.create({"apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE}})
    return str(node["metadata"]["uid"])


def stored_slices(kube_api: KubeApiServer) -> list[dict[str, Any]]:
    return sorted(kube_api.store.list(SLICES), key=lambda s: s["metadata"]["name"])


async def lose_gpu(bus: Bus, device: str) -> None:
    await bus.request(NODE, InjectFault(device=device, kind="gpu-lost"), InjectFaultReply)


async def test_first_publish_creates_the_pool_owned_by_the_node(
    nats_server: EmbeddedNats, bus: Bus, kube_api: KubeApiServer, tmp_path: Path
) -> None:
    uid = add_node(kube_api)
    events = await InventoryEvents.subscribe(bus)
    async with discovery_process(cluster_settings(nats_server, kube_api, tmp_path)) as discovery:
        published = await events.next(SlicesPublished)
        assert (discovery.kube.mode, discovery.kube.minor) == ("cluster", 34)  # asked the server's /version
    slices = stored_slices(kube_api)
    assert (published.created, published.slice_count, published.generation) == (8, 8, 1)
    assert len(slices) == 8
    assert {s["spec"]["pool"]["generation"] for s in slices} == {1}
    assert all(s["metadata"]["ownerReferences"] == [owner(uid)] for s in slices)
    assert "gpu-0-mig-1g10gb-19-0" in slice_devices(slices)


def owner(uid: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node", "name": NODE, "uid": uid, "controller": True}


async def test_an_unchanged_republish_writes_nothing(
    nats_server: EmbeddedNats, bus: Bus, kube_api: KubeApiServer, tmp_path: Path
) -> None:
    add_node(kube_api)
    events = await InventoryEvents.subscribe(bus)
    async with discovery_process(cluster_settings(nats_server, kube_api, tmp_path)) as discovery:
        await events.next(SlicesPublished)
        writes = kube_api.store.writes()
        assert await discovery.reconciler.sync() is True
        assert kube_api.store.writes() == writes


async def test_a_lost_gpu_updates_the_pool_and_deletes_the_obsolete_slice(
    nats_server: EmbeddedNats, bus: Bus, kube_api: KubeApiServer, tmp_path: Path
) -> None:
    add_node(kube_api)
    events = await InventoryEvents.subscribe(bus)
    async with discovery_process(cluster_settings(nats_server, kube_api, tmp_path)):
        await events.next(SlicesPublished)
        await lose_gpu(bus, "gpu-7")
        lost = await events.next(InventoryChanged)
        published = await events.next(SlicesPublished)
    slices = stored_slices(kube_api)
    assert lost.reason == "device-lost"
    assert (published.updated, published.deleted, published.created, published.generation) == (7, 1, 0, 2)
    assert [s["metadata"]["name"] for s in slices] == [f"{NODE}-gpu.gpudra.io-{i}" for i in range(7)]
    assert {s["spec"]["pool"]["generation"] for s in slices} == {2}
    assert {s["spec"]["pool"]["resourceSliceCount"] for s in slices} == {7}
    assert not [name for name in slice_devices(slices) if name.startswith("gpu-7")]


async def test_a_conflict_is_retried_with_a_fresh_read(
    nats_server: EmbeddedNats, bus: Bus, kube_api: KubeApiServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    add_node(kube_api)
    events = await InventoryEvents.subscribe(bus)
    async with discovery_process(cluster_settings(nats_server, kube_api, tmp_path)):
        await events.next(SlicesPublished)
        kube_api.store.fail("update", SLICES, code=409, times=1)
        await lose_gpu(bus, "gpu-0")
        published = await events.next(SlicesPublished)
    assert (published.updated, published.deleted, published.generation) == (7, 1, 2)
    assert {s["spec"]["pool"]["generation"] for s in stored_slices(kube_api)} == {2}
    retries = [r for r in caplog.records if r.getMessage().startswith("publishing ResourceSlices failed; retrying")]
    assert len(retries) == 1
    assert "the object has been modified" in getattr(retries[0], "error", "")


async def test_kubernetes_1_35_gets_its_own_layout(
    nats_server: EmbeddedNats, bus: Bus, kube_api: KubeApiServer, tmp_path: Path
) -> None:
    kube_api.version = "v1.35.0"
    add_node(kube_api)
    events = await InventoryEvents.subscribe(bus)
    async with discovery_process(cluster_settings(nats_server, kube_api, tmp_path)) as discovery:
        await events.next(SlicesPublished)
        assert discovery.kube.minor == 35
    counter_only = [s for s in stored_slices(kube_api) if "devices" not in s["spec"]]
    assert counter_only  # counter sets live in their own slices from 1.35
    assert all(s["spec"]["sharedCounters"] for s in counter_only)


async def test_a_missing_node_is_an_error_that_is_retried(
    nats_server: EmbeddedNats, bus: Bus, kube_api: KubeApiServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    events = await InventoryEvents.subscribe(bus)
    async with discovery_process(cluster_settings(nats_server, kube_api, tmp_path)):
        await events.next(InventoryChanged)
        assert stored_slices(kube_api) == []
        add_node(kube_api)
        published = await events.next(SlicesPublished)  # the retry, retry_seconds later
    assert published.created == 8
    [error] = [r for r in caplog.records if r.getMessage() == "cannot publish ResourceSlices; retrying later"]
    assert "Node node-a does not exist" in getattr(error, "error", "")
