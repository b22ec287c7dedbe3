"""The Kubernetes port's contract, run against both adapters: the cluster one on the API test server, and the
standalone store on a real nats-server. A service must not be able to tell them apart."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import pytest

from libs.kube import (
    DEVICE_CLASSES,
    LEASES,
    NODES,
    PODS,
    RESOURCE_CLAIMS,
    RESOURCE_SLICES,
    AlreadyExists,
    BadRequest,
    Conflict,
    Invalid,
    KubeApi,
    NotFound,
    WatchEvent,
)
from libs.slices import DRIVER_NAME
from tests.kube.kube_support import (
    COMPUTE_DOMAINS,
    Backend,
    allocation,
    claim,
    cluster_backend,
    compute_domain,
    device_class,
    gpus,
    lease,
    local_backend,
    node,
    pod,
    pool,
)

Obj = dict[str, Any]


@pytest.fixture(params=["cluster", "local"])
def backend_source(request: pytest.FixtureRequest) -> tuple[str, Any]:
    """The server behind the adapter; only the one the parameter names is started."""
    return request.param, request.getfixturevalue("kube_api" if request.param == "cluster" else "bus")


@pytest.fixture
async def backend(backend_source: tuple[str, Any]) -> AsyncIterator[Backend]:
    kind, server = backend_source
    made = await (cluster_backend(server) if kind == "cluster" else local_backend(server))
    yield made
    await made.kube.close()


@pytest.fixture
def kube(backend: Backend) -> KubeApi:
    return backend.kube


async def take(events: AsyncIterator[WatchEvent], count: int) -> list[tuple[str, str]]:
    """The next ``count`` events as (type, name); fails the test after 5 s instead of hanging."""
    async with asyncio.timeout(5):
        return [(event.type, event.object["metadata"]["name"]) for event in [await anext(events) for _ in range(count)]]


# --- create / get -----------------------------------------------------------------------------------------


async def test_create_fills_server_fields_and_get_returns_the_object(kube: KubeApi) -> None:
    created = await kube.create(RESOURCE_SLICES, pool("node-a", [gpus(0, 1)])[0])
    meta = created["metadata"]
    assert meta["uid"]
    assert meta["creationTimestamp"]
    assert meta["resourceVersion"]
    assert meta["generation"] == 1
    assert await kube.get(RESOURCE_SLICES, meta["name"]) == created


async def test_create_of_a_taken_name_is_already_exists(kube: KubeApi) -> None:
    await kube.create(NODES, node("node-a"))
    with pytest.raises(AlreadyExists, match="Node node-a"):
        await kube.create(NODES, node("node-a"))


async def test_get_of_a_missing_object_is_not_found_and_names_it(kube: KubeApi) -> None:
    with pytest.raises(NotFound, match="ResourceClaim default/missing"):
        await kube.get(RESOURCE_CLAIMS, "missing", "default")


@pytest.mark.parametrize(
    "broken",
    [
        {"kind": "Node", "metadata": {"name": "node-a"}},
        {"apiVersion": "v1", "metadata": {"name": "node-a"}},
        {"apiVersion": "v1", "kind": "Node", "metadata": {}},
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "node-a"}},
    ],
)
async def test_an_object_without_api_version_kind_or_name_is_refused(
    backend: Backend, kube: KubeApi, broken: Obj
) -> None:
    before = await backend.writes()
    with pytest.raises(Invalid):
        await kube.create(NODES, broken)
    assert await backend.writes() == before


# --- list -------------------------------------------------------------------------------------------------


async def test_slices_list_by_driver_and_node(kube: KubeApi) -> None:
    mine = pool("node-a", [gpus(0, 1), gpus(2)])
    other_node = pool("node-b", [gpus(0)])
    other_driver = pool("node-a", [gpus(0)])[0]
    other_driver["metadata"]["name"] = "node-a-other.example.com-0"
    other_driver["spec"]["driver"] = "other.example.com"
    for resource_slice in [*mine, *other_node, other_driver]:
        await kube.create(RESOURCE_SLICES, resource_slice)
    listed = await kube.list(RESOURCE_SLICES, fields={"spec.driver": DRIVER_NAME, "spec.nodeName": "node-a"})
    assert [s["metadata"]["name"] for s in listed.items] == [s["metadata"]["name"] for s in mine]
    assert all(s["apiVersion"] == "resource.k8s.io/v1" and s["kind"] == "ResourceSlice" for s in listed.items)
    assert listed.resource_version


async def test_list_by_a_field_the_server_does_not_index_is_bad_request(kube: KubeApi) -> None:
    with pytest.raises(BadRequest, match=r"field label not supported: spec\.pool\.name"):
        await kube.list(RESOURCE_SLICES, fields={"spec.pool.name": "node-a"})


async def test_pods_list_by_node_across_namespaces_or_in_one(kube: KubeApi) -> None:
    await kube.create(PODS, pod("train", "node-a", "team-a"))
    await kube.create(PODS, pod("eval", "node-a", "team-b"))
    await kube.create(PODS, pod("web", "node-b", "team-a"))
    everywhere = await kube.list(PODS, fields={"spec.nodeName": "node-a"})
    assert [(p["metadata"]["namespace"], p["metadata"]["name"]) for p in everywhere.items] == [
        ("team-a", "train"),
        ("team-b", "eval"),
    ]
    in_team_a = await kube.list(PODS, "team-a", fields={"spec.nodeName": "node-a"})
    assert [p["metadata"]["name"] for p in in_team_a.items] == ["train"]


async def test_nodes_list_by_label(kube: KubeApi) -> None:
    await kube.create(NODES, node("node-a", gpu="true"))
    await kube.create(NODES, node("node-b"))
    assert [n["metadata"]["name"] for n in (await kube.list(NODES, labels={"gpu": "true"})).items] == ["node-a"]


async def test_device_classes_get_and_list(kube: KubeApi) -> None:
    await kube.create(DEVICE_CLASSES, device_class())
    assert (await kube.get(DEVICE_CLASSES, DRIVER_NAME))["spec"]["selectors"]
    assert [c["metadata"]["name"] for c in (await kube.list(DEVICE_CLASSES)).items] == [DRIVER_NAME]


# --- update / status --------------------------------------------------------------------------------------


async def test_update_with_a_stale_resource_version_is_conflict(kube: KubeApi) -> None:
    first = await kube.create(RESOURCE_SLICES, pool("node-a", [gpus(0)])[0])
    second = first | {"spec": first["spec"] | {"devices": gpus(0, 1)}}
    updated = await kube.update(RESOURCE_SLICES, second)
    assert updated["metadata"]["resourceVersion"] != first["metadata"]["resourceVersion"]
    assert updated["metadata"]["generation"] == 2
    stale = first | {"spec": first["spec"] | {"devices": gpus(2)}}
    with pytest.raises(Conflict, match=r"ResourceSlice node-a-gpu\.gpudra\.io-0"):
        await kube.update(RESOURCE_SLICES, stale)
    assert (await kube.get(RESOURCE_SLICES, first["metadata"]["name"]))["spec"]["devices"] == gpus(0, 1)


async def test_update_without_resource_version_applies_to_the_latest(kube: KubeApi) -> None:
    await kube.create(NODES, node("node-a"))
    await kube.patch(NODES, "node-a", {"metadata": {"annotations": {"other": "writer"}}})
    updated = await kube.update(NODES, node("node-a", gpu="true"))
    assert updated["metadata"]["labels"] == {"gpu": "true"}


async def test_an_update_that_changes_nothing_keeps_the_resource_version(kube: KubeApi) -> None:
    created = await kube.create(RESOURCE_SLICES, pool("node-a", [gpus(0)])[0])
    again = await kube.update(RESOURCE_SLICES, created)
    assert again["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]


async def test_claim_status_changes_only_through_update_status(kube: KubeApi) -> None:
    created = await kube.create(RESOURCE_CLAIMS, claim("train-0") | {"status": allocation("node-b", "gpu-9")})
    assert "status" not in created  # the server drops status on create
    allocated = await kube.update_status(RESOURCE_CLAIMS, created | {"status": allocation("node-a", "gpu-0")})
    assert allocated["status"] == allocation("node-a", "gpu-0")
    relabelled = allocated | {"metadata": allocated["metadata"] | {"labels": {"team": "a"}}, "status": {}}
    updated = await kube.update(RESOURCE_CLAIMS, relabelled)
    assert updated["metadata"]["labels"] == {"team": "a"}
    assert updated["status"] == allocation("node-a", "gpu-0")
    listed = await kube.list(RESOURCE_CLAIMS, "default")
    assert [c["status"] for c in listed.items] == [allocation("node-a", "gpu-0")]


async def test_lease_renewal_by_a_stale_holder_is_conflict(kube: KubeApi) -> None:
    held = await kube.create(LEASES, lease("health-remediation", "node-a"))
    renewed = await kube.update(LEASES, held | {"spec": held["spec"] | {"leaseDurationSeconds": 20}})
    takeover = held | {"spec": held["spec"] | {"holderIdentity": "node-b"}}
    with pytest.raises(Conflict):
        await kube.update(LEASES, takeover)
    assert (await kube.get(LEASES, "health-remediation", "gpudra")) == renewed


# --- patch ------------------------------------------------------------------------------------------------


async def test_node_merge_patch_of_labels_annotations_taints_and_unschedulable(kube: KubeApi) -> None:
    await kube.create(NODES, node("node-a", keep="1", drop="1"))
    taint = {"key": "gpu.gpudra.io/unhealthy", "value": "xid-79", "effect": "NoSchedule"}
    patched = await kube.patch(
        NODES,
        "node-a",
        {
            "metadata": {"labels": {"drop": None, "new": "1"}, "annotations": {"gpu.gpudra.io/state": "cordoned"}},
            "spec": {"taints": [taint], "unschedulable": True},
        },
    )
    assert patched["metadata"]["labels"] == {"keep": "1", "new": "1"}
    assert patched["metadata"]["annotations"] == {"gpu.gpudra.io/state": "cordoned"}
    assert patched["spec"] == {"taints": [taint], "unschedulable": True}
    cleared = await kube.patch(NODES, "node-a", {"spec": {"taints": None, "unschedulable": None}})
    assert cleared["spec"] == {}


async def test_a_patch_naming_a_stale_resource_version_is_conflict(kube: KubeApi) -> None:
    created = await kube.create(NODES, node("node-a"))
    await kube.patch(NODES, "node-a", {"metadata": {"labels": {"a": "1"}}})
    stale = {"metadata": {"resourceVersion": created["metadata"]["resourceVersion"], "labels": {"a": "2"}}}
    with pytest.raises(Conflict):
        await kube.patch(NODES, "node-a", stale)


async def test_patch_of_a_missing_object_is_not_found(kube: KubeApi) -> None:
    with pytest.raises(NotFound, match="Node node-x"):
        await kube.patch(NODES, "node-x", {"metadata": {"labels": {"a": "1"}}})


# --- delete / evict ---------------------------------------------------------------------------------------


async def test_delete_with_a_stale_resource_version_is_conflict_then_deletes(kube: KubeApi) -> None:
    created = await kube.create(RESOURCE_SLICES, pool("node-a", [gpus(0)])[0])
    name = created["metadata"]["name"]
    updated = await kube.update(RESOURCE_SLICES, created | {"spec": created["spec"] | {"devices": gpus(1)}})
    with pytest.raises(Conflict):
        await kube.delete(RESOURCE_SLICES, name, resource_version=created["metadata"]["resourceVersion"])
    await kube.delete(RESOURCE_SLICES, name, resource_version=updated["metadata"]["resourceVersion"])
    with pytest.raises(NotFound):
        await kube.get(RESOURCE_SLICES, name)
    with pytest.raises(NotFound):
        await kube.delete(RESOURCE_SLICES, name)


async def test_a_deleted_name_can_be_created_again(kube: KubeApi) -> None:
    first = await kube.create(NODES, node("node-a"))
    await kube.delete(NODES, "node-a")
    second = await kube.create(NODES, node("node-a"))
    assert second["metadata"]["uid"] != first["metadata"]["uid"]


async def test_evicted_pod_is_gone(kube: KubeApi) -> None:
    await kube.create(PODS, pod("train", "node-a", "team-a"))
    await kube.evict("train", "team-a")
    with pytest.raises(NotFound):
        await kube.get(PODS, "train", "team-a")
    with pytest.raises(NotFound):
        await kube.evict("train", "team-a")


async def test_an_eviction_with_a_grace_period_removes_the_pod(kube: KubeApi) -> None:
    await kube.create(PODS, pod("train", "node-a", "team-a"))
    await kube.evict("train", "team-a", grace_period_seconds=30)
    with pytest.raises(NotFound):
        await kube.get(PODS, "train", "team-a")


# --- custom resources -------------------------------------------------------------------------------------


async def test_compute_domain_create_update_status_and_list(kube: KubeApi) -> None:
    created = await kube.create(COMPUTE_DOMAINS, compute_domain("imex"))
    unversioned = created | {"metadata": {k: v for k, v in created["metadata"].items() if k != "resourceVersion"}}
    with pytest.raises(Invalid, match="resourceVersion"):
        await kube.update(COMPUTE_DOMAINS, unversioned)
    resized = await kube.update(COMPUTE_DOMAINS, created | {"spec": {"numNodes": 4}})
    assert resized["metadata"]["generation"] == 2
    ready = await kube.update_status(COMPUTE_DOMAINS, resized | {"status": {"status": "Ready"}})
    assert ready["metadata"]["generation"] == 2
    assert ready["status"] == {"status": "Ready"}
    assert (await kube.list(COMPUTE_DOMAINS, "default")).items == [ready]


# --- watch ------------------------------------------------------------------------------------------------


async def test_watch_from_a_resource_version_sees_the_changes_in_order(kube: KubeApi) -> None:
    start = (await kube.list(RESOURCE_CLAIMS, "default")).resource_version
    created = await kube.create(RESOURCE_CLAIMS, claim("train-0"))
    await kube.update_status(RESOURCE_CLAIMS, created | {"status": allocation("node-a", "gpu-0")})
    await kube.delete(RESOURCE_CLAIMS, "train-0", "default")
    async with aclosing(kube.watch(RESOURCE_CLAIMS, "default", resource_version=start)) as events:
        assert await take(events, 3) == [("ADDED", "train-0"), ("MODIFIED", "train-0"), ("DELETED", "train-0")]


async def test_watch_without_resource_version_lists_then_follows(kube: KubeApi) -> None:
    await kube.create(NODES, node("node-a"))
    await kube.create(NODES, node("node-b"))
    async with aclosing(kube.watch(NODES)) as events:
        assert await take(events, 2) == [("ADDED", "node-a"), ("ADDED", "node-b")]
        await kube.create(NODES, node("node-c"))
        assert await take(events, 1) == [("ADDED", "node-c")]


async def test_watch_by_node_sees_only_that_nodes_pods(kube: KubeApi) -> None:
    start = (await kube.list(PODS)).resource_version
    await kube.create(PODS, pod("elsewhere", "node-b"))
    await kube.create(PODS, pod("mine", "node-a", "team-a"))
    await kube.evict("elsewhere", "default")
    await kube.evict("mine", "team-a")
    watch = kube.watch(PODS, fields={"spec.nodeName": "node-a"}, resource_version=start)
    async with aclosing(watch) as events:
        assert await take(events, 2) == [("ADDED", "mine"), ("DELETED", "mine")]


async def test_watch_reports_an_object_leaving_its_label_selection_as_deleted(kube: KubeApi) -> None:
    await kube.create(NODES, node("node-a", pool="gpu"))
    async with aclosing(kube.watch(NODES, labels={"pool": "gpu"})) as events:
        assert await take(events, 1) == [("ADDED", "node-a")]
        await kube.patch(NODES, "node-a", {"metadata": {"labels": {"pool": "cpu"}}})
        await kube.patch(NODES, "node-a", {"metadata": {"labels": {"pool": "gpu"}}})
        assert await take(events, 2) == [("DELETED", "node-a"), ("ADDED", "node-a")]


async def test_a_deleted_event_carries_the_last_state(kube: KubeApi) -> None:
    created = await kube.create(COMPUTE_DOMAINS, compute_domain("imex", nodes=3))
    async with aclosing(
        kube.watch(COMPUTE_DOMAINS, "default", resource_version=created["metadata"]["resourceVersion"])
    ) as events:
        await kube.delete(COMPUTE_DOMAINS, "imex", "default")
        async with asyncio.timeout(5):
            event = await anext(events)
    assert event.type == "DELETED"
    assert event.object["kind"] == "ComputeDomain"
    assert event.object["spec"] == {"numNodes": 3}
    assert event.object["metadata"]["uid"] == created["metadata"]["uid"]


async def test_compute_domain_merge_patch(kube: KubeApi) -> None:
    await kube.create(COMPUTE_DOMAINS, compute_domain("imex"))
    patched = await kube.patch(COMPUTE_DOMAINS, "imex", {"spec": {"numNodes": 8}}, "default")
    assert patched["spec"] == {"numNodes": 8}
    assert patched["metadata"]["generation"] == 2


async def test_finalizers_keep_a_deleted_object_until_removed(kube: KubeApi) -> None:
    domain = compute_domain("imex")
    domain["metadata"]["finalizers"] = ["resource.nvidia.com/computedomain"]
    created = await kube.create(COMPUTE_DOMAINS, domain)
    async with aclosing(
        kube.watch(COMPUTE_DOMAINS, "default", resource_version=created["metadata"]["resourceVersion"])
    ) as events:
        await kube.delete(COMPUTE_DOMAINS, "imex", "default")
        deleting = await kube.get(COMPUTE_DOMAINS, "imex", "default")
        assert deleting["metadata"]["deletionTimestamp"]
        released = deleting | {"metadata": deleting["metadata"] | {"finalizers": []}}
        await kube.update(COMPUTE_DOMAINS, released)
        assert await take(events, 2) == [("MODIFIED", "imex"), ("DELETED", "imex")]
    with pytest.raises(NotFound):
        await kube.get(COMPUTE_DOMAINS, "imex", "default")


async def test_a_kind_without_status_subresource_has_no_update_status(kube: KubeApi) -> None:
    held = await kube.create(LEASES, lease("health-remediation", "node-a"))
    with pytest.raises(NotFound):
        await kube.update_status(LEASES, held)
