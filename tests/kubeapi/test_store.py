"""The store hooks tests rely on: GC, request counters, injected failures, waiting on changes."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from kubernetes_asyncio.client import ApiClient
from kubernetes_asyncio.client.exceptions import ApiException

from tests.kubeapi.objects import node, pod, resource_slice, status_of
from tests.support.kubeapi import KubeApiServer


async def test_deleting_a_node_collects_its_resource_slices(
    client: ApiClient, kube_api: KubeApiServer, core: Any, res: Any
) -> None:
    owner = client.sanitize_for_serialization(await core.create_node(node("node-1")))
    await core.create_node(node("node-2"))
    await res.create_resource_slice(resource_slice("owned", "node-1", owner=owner))
    await res.create_resource_slice(resource_slice("unowned", "node-1"))
    await core.delete_node("node-1")
    assert [s["metadata"]["name"] for s in kube_api.store.list("resourceslices")] == ["unowned"]


async def test_orphan_propagation_keeps_dependents(
    client: ApiClient, kube_api: KubeApiServer, core: Any, res: Any
) -> None:
    owner = client.sanitize_for_serialization(await core.create_node(node("node-1")))
    await res.create_resource_slice(resource_slice("owned", "node-1", owner=owner))
    await core.delete_node("node-1", propagation_policy="Orphan")
    assert kube_api.store.get("resourceslices", "owned") is not None


async def test_dependent_with_a_remaining_owner_only_loses_the_reference(kube_api: KubeApiServer) -> None:
    store = kube_api.store
    first, second = store.create(node("node-1")), store.create(node("node-2"))
    body = pod("p")
    body["metadata"]["ownerReferences"] = [
        {"apiVersion": "v1", "kind": "Node", "name": n["metadata"]["name"], "uid": n["metadata"]["uid"]}
        for n in (first, second)
    ]
    store.create(body)
    store.delete("nodes", "node-1")
    remaining = store.get("pods", "p", "default")
    assert remaining is not None
    assert [o["name"] for o in remaining["metadata"]["ownerReferences"]] == ["node-2"]


async def test_write_counters_see_an_unchanged_republish(client: ApiClient, kube_api: KubeApiServer, res: Any) -> None:
    created = await res.create_resource_slice(resource_slice("s", "node-1"))
    await res.read_resource_slice("s")
    assert kube_api.store.writes("resourceslices") == 1
    assert kube_api.store.requests[("get", "resourceslices")] == 1
    kube_api.store.reset_counts()
    rv = kube_api.store.resource_version
    await res.replace_resource_slice("s", client.sanitize_for_serialization(created))
    assert kube_api.store.writes("resourceslices") == 1  # the request was made...
    assert kube_api.store.resource_version == rv  # ...but changed nothing


async def test_injected_conflicts_then_success(kube_api: KubeApiServer, core: Any) -> None:
    kube_api.store.create(node("node-1"))
    kube_api.store.fail("patch", "nodes", name="node-1", code=409, times=2)
    for _ in range(2):
        with pytest.raises(ApiException) as err:
            await core.patch_node("node-1", {"metadata": {"labels": {"a": "b"}}})
        assert status_of(err.value)["reason"] == "Conflict"
    patched = await core.patch_node("node-1", {"metadata": {"labels": {"a": "b"}}})
    assert patched.metadata.labels == {"a": "b"}
    assert kube_api.store.writes("nodes") == 3


async def test_injected_failure_for_every_verb(kube_api: KubeApiServer, res: Any) -> None:
    kube_api.store.fail("*", "resourceslices", code=503, times=None)
    for call in (res.list_resource_slice(), res.read_resource_slice("s")):
        with pytest.raises(ApiException) as err:
            await call
        assert err.value.status == 503
    kube_api.store.clear_failures()
    assert (await res.list_resource_slice()).items == []


async def test_wait_for_returns_once_the_condition_holds(kube_api: KubeApiServer, core: Any) -> None:
    store = kube_api.store
    waiter = asyncio.create_task(store.wait_for(lambda: store.get("nodes", "node-1")))
    await core.create_node(node("node-1"))
    found = await waiter
    assert found["metadata"]["name"] == "node-1"


async def test_wait_for_times_out(kube_api: KubeApiServer) -> None:
    with pytest.raises(TimeoutError):
        await kube_api.store.wait_for(lambda: kube_api.store.get("nodes", "never"), timeout=0.05)


async def test_direct_writes_are_served(kube_api: KubeApiServer, core: Any) -> None:
    created = kube_api.store.create(pod("p", node_name="node-1"))
    created["status"] = {"phase": "Running"}
    kube_api.store.update(created)
    fetched = await core.read_namespaced_pod("p", "default")
    assert fetched.status.phase == "Running"
    assert kube_api.store.writes() == 0  # direct access is not an API request
    assert kube_api.store.delete("pods", "p", "default") is not None
    assert kube_api.store.delete("pods", "p", "default") is None
