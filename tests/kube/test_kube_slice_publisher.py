"""The ResourceSlice publisher against the API test server (which validates every slice against Kubernetes
1.34 and counts the writes it receives), and the same publishes against the standalone store."""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator
from typing import Any, cast

import msgspec
import pytest

from libs.devices.model import Inventory
from libs.devices.simulated import load_profile
from libs.devices.simulated.ops import initial_state, inventory_of
from libs.events.catalogue.inventory import SlicesPublished
from libs.kube import NODES, RESOURCE_SLICES, KubeApi, Resource
from libs.kube.backoff import Backoff
from libs.kube.slice_publisher import PublishPolicy, SlicePublisher, SlicePublishError, synthetic_node_uid
from libs.slices import DRIVER_NAME, MigMode, build_slices
from tests.kube.kube_support import Backend, cluster_backend, gpus, local_backend, node, pool
from tests.support.kubeapi import KubeApiServer

Obj = dict[str, Any]
NODE = "node-a"
FAST = PublishPolicy(attempts=4, backoff=Backoff(base=0.001, cap=0.005))


@functools.cache
def inventory() -> Inventory:
    """8 H100s, four of them with dynamic MIG: five slices on 1.34 (one per MIG GPU, one for the rest)."""
    return inventory_of(initial_state(NODE, load_profile("mixed-mig")))


def without_gpu(inv: Inventory, minor: int) -> Inventory:
    return msgspec.structs.replace(
        inv,
        gpus=tuple(g for g in inv.gpus if g.minor != minor),
        mig_devices=tuple(m for m in inv.mig_devices if m.parent_minor != minor),
    )


def desired(inv: Inventory) -> list[Obj]:
    return build_slices(inv, k8s_minor=34, generation=1, mig_mode=MigMode.DYNAMIC)


@pytest.fixture(params=["cluster", "local"])
def backend_source(request: pytest.FixtureRequest) -> tuple[str, Any]:
    return request.param, request.getfixturevalue("kube_api" if request.param == "cluster" else "bus")


@pytest.fixture
async def backend(backend_source: tuple[str, Any]) -> AsyncIterator[Backend]:
    kind, server = backend_source
    made = await (cluster_backend(server) if kind == "cluster" else local_backend(server))
    yield made
    await made.kube.close()


@pytest.fixture
async def cluster(kube_api: KubeApiServer) -> AsyncIterator[Backend]:
    made = await cluster_backend(kube_api)
    yield made
    await made.kube.close()


async def published(kube: KubeApi, node_name: str = NODE) -> list[Obj]:
    fields = {"spec.driver": DRIVER_NAME, "spec.nodeName": node_name}
    return (await kube.list(RESOURCE_SLICES, fields=fields)).items


def publisher(kube: KubeApi, **options: Any) -> SlicePublisher:
    return SlicePublisher(kube, NODE, policy=FAST, **options)


class Interfering:
    """A ``KubeApi`` where another writer changes each slice right before our first update of it: a real
    conflict, produced by the store itself rather than injected."""

    def __init__(self, kube: KubeApi) -> None:
        self.kube = kube
        self.interfered: set[str] = set()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.kube, name)

    async def update(self, resource: Resource, obj: Obj) -> Obj:
        name = obj["metadata"]["name"]
        if name not in self.interfered:
            self.interfered.add(name)
            current = await self.kube.get(resource, name)
            await self.kube.update(resource, current | {"metadata": current["metadata"] | {"labels": {"x": "y"}}})
        return await self.kube.update(resource, obj)


# --- both adapters ----------------------------------------------------------------------------------------


async def test_first_publish_creates_the_pool_owned_by_the_node(backend: Backend) -> None:
    node_uid = (await backend.kube.create(NODES, node(NODE)))["metadata"]["uid"]
    result = await publisher(backend.kube).publish(desired(inventory()))
    assert (result.created, result.updated, result.deleted) == (5, 0, 0)
    assert (result.slice_count, result.device_count, result.generation) == (5, 108, 1)
    slices = await published(backend.kube)
    assert [s["metadata"]["name"] for s in slices] == [s["metadata"]["name"] for s in desired(inventory())]
    owner = {"apiVersion": "v1", "kind": "Node", "name": NODE, "uid": node_uid, "controller": True}
    assert all(s["metadata"]["ownerReferences"] == [owner] for s in slices)
    assert {s["spec"]["pool"]["generation"] for s in slices} == {1}


async def test_an_unchanged_republish_writes_nothing(backend: Backend) -> None:
    await backend.kube.create(NODES, node(NODE))
    await publisher(backend.kube).publish(desired(inventory()))
    before = await backend.writes()
    result = await publisher(backend.kube).publish(desired(inventory()))  # a restarted process
    assert result.writes == 0
    assert result.generation == 1
    assert await backend.writes() == before


async def test_a_lost_gpu_rewrites_the_pool_at_a_new_generation_and_drops_the_obsolete_slice(backend: Backend) -> None:
    await backend.kube.create(NODES, node(NODE))
    slice_publisher = publisher(backend.kube)
    await slice_publisher.publish(desired(inventory()))
    result = await slice_publisher.publish(desired(without_gpu(inventory(), 3)))
    assert (result.created, result.updated, result.deleted) == (0, 4, 1)
    assert result.generation == 2
    slices = await published(backend.kube)
    assert len(slices) == 4
    assert {(s["spec"]["pool"]["generation"], s["spec"]["pool"]["resourceSliceCount"]) for s in slices} == {(2, 4)}
    names = {d["name"] for s in slices for d in s["spec"]["devices"]}
    assert names == {d["name"] for s in desired(without_gpu(inventory(), 3)) for d in s["spec"]["devices"]}
    assert not any(n == "gpu-3" or n.startswith("gpu-3-") for n in names)


async def test_a_pool_that_shrank_leaves_nothing_behind(backend: Backend) -> None:
    await backend.kube.create(NODES, node(NODE))
    slice_publisher = publisher(backend.kube)
    await slice_publisher.publish(pool(NODE, [gpus(0, 1, 2, 3), gpus(4, 5, 6, 7)]))
    result = await slice_publisher.publish(pool(NODE, [gpus(0, 1, 2)]))
    assert (result.created, result.updated, result.deleted) == (0, 1, 1)
    [remaining] = await published(backend.kube)
    assert remaining["spec"]["devices"] == gpus(0, 1, 2)
    assert remaining["spec"]["pool"] == {"name": NODE, "generation": 2, "resourceSliceCount": 1}


async def test_a_conflicting_writer_is_retried_from_a_fresh_read(backend: Backend) -> None:
    await backend.kube.create(NODES, node(NODE))
    await publisher(backend.kube).publish(pool(NODE, [gpus(0, 1)]))
    interfering = Interfering(backend.kube)
    result = await publisher(cast(KubeApi, interfering)).publish(pool(NODE, [gpus(0)]))
    assert result.attempts == 2
    [resource_slice] = await published(backend.kube)
    assert resource_slice["spec"]["devices"] == gpus(0)
    assert "labels" not in resource_slice["metadata"]  # our write replaced the other writer's


async def test_standalone_without_a_node_object_owns_slices_by_a_stable_synthetic_uid(backend: Backend) -> None:
    await publisher(backend.kube, synthetic_owner=True).publish(pool(NODE, [gpus(0)]))
    [resource_slice] = await published(backend.kube)
    assert resource_slice["metadata"]["ownerReferences"][0]["uid"] == synthetic_node_uid(NODE)
    result = await publisher(backend.kube, synthetic_owner=True).publish(pool(NODE, [gpus(0)]))
    assert result.writes == 0


async def test_other_nodes_and_drivers_are_left_alone(backend: Backend) -> None:
    await backend.kube.create(NODES, node(NODE))
    theirs = pool("node-b", [gpus(0)])[0]
    await backend.kube.create(RESOURCE_SLICES, theirs)
    slice_publisher = publisher(backend.kube)
    await slice_publisher.publish(pool(NODE, [gpus(0)]))
    await slice_publisher.publish([])  # unpublish
    assert await published(backend.kube) == []
    assert [s["metadata"]["name"] for s in await published(backend.kube, "node-b")] == [theirs["metadata"]["name"]]


# --- the API server's answers -----------------------------------------------------------------------------


async def test_an_injected_409_on_update_is_retried(kube_api: KubeApiServer, cluster: Backend) -> None:
    kube_api.store.create(node(NODE))
    slice_publisher = publisher(cluster.kube)
    await slice_publisher.publish(pool(NODE, [gpus(0, 1)]))
    kube_api.store.fail("update", "resourceslices", code=409, times=1)
    result = await slice_publisher.publish(pool(NODE, [gpus(1)]))
    assert result.attempts == 2
    assert kube_api.store.requests[("update", "resourceslices")] == 2
    [resource_slice] = kube_api.store.list("resourceslices.resource.k8s.io")
    assert resource_slice["spec"]["devices"] == gpus(1)
    assert resource_slice["spec"]["pool"]["generation"] == 2


async def test_transient_failures_are_retried(kube_api: KubeApiServer, cluster: Backend) -> None:
    kube_api.store.create(node(NODE))
    kube_api.store.fail("list", "resourceslices", code=503, times=2)
    kube_api.store.fail("create", "resourceslices", code=429, times=1)
    result = await publisher(cluster.kube).publish(pool(NODE, [gpus(0)]))
    assert (result.attempts, result.created) == (4, 1)


async def test_a_rejected_slice_fails_at_once_naming_it(kube_api: KubeApiServer, cluster: Backend) -> None:
    kube_api.store.create(node(NODE))
    bad = pool(NODE, [gpus(0)])
    bad[0]["spec"]["devices"][0]["name"] = "GPU_0"
    with pytest.raises(SlicePublishError, match=r"node-a-gpu\.gpudra\.io-0.*devices\[0\]\.name"):
        await publisher(cluster.kube).publish(bad)
    assert kube_api.store.requests[("create", "resourceslices")] == 1


async def test_endless_conflicts_give_up_after_the_policy_attempts(kube_api: KubeApiServer, cluster: Backend) -> None:
    kube_api.store.create(node(NODE))
    kube_api.store.fail("create", "resourceslices", code=409, times=None)
    with pytest.raises(SlicePublishError, match="gave up after 4 attempts"):
        await publisher(cluster.kube).publish(pool(NODE, [gpus(0)]))


async def test_a_missing_node_in_a_cluster_is_an_error_naming_the_setting(cluster: Backend) -> None:
    with pytest.raises(SlicePublishError, match="GPUDRA_NODE_NAME"):
        await publisher(cluster.kube).publish(pool(NODE, [gpus(0)]))


async def test_deleting_the_node_garbage_collects_its_slices(kube_api: KubeApiServer, cluster: Backend) -> None:
    kube_api.store.create(node(NODE))
    await publisher(cluster.kube).publish(pool(NODE, [gpus(0), gpus(1)]))
    kube_api.store.delete("nodes", NODE)
    assert kube_api.store.list("resourceslices.resource.k8s.io") == []


async def test_the_result_is_the_slices_published_event(kube_api: KubeApiServer, cluster: Backend) -> None:
    kube_api.store.create(node(NODE))
    result = await publisher(cluster.kube).publish(pool(NODE, [gpus(0, 1), gpus(2)]))
    assert result.event() == SlicesPublished(
        node=NODE, driver=DRIVER_NAME, pool=NODE, generation=1, slice_count=2, device_count=3, created=2
    )


async def test_publishing_logs_at_debug_level_without_clashing_with_logrecord_fields(
    cluster: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    await cluster.kube.create(NODES, node(NODE))
    caplog.set_level(logging.DEBUG, logger="libs.kube.slice_publisher")
    result = await publisher(cluster.kube).publish(desired(inventory()))
    [record] = [r for r in caplog.records if r.getMessage() == "published ResourceSlices"]
    assert len(record.__dict__["slices_created"]) == result.created
