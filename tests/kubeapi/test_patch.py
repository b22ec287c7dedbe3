"""The three patch content types, as kubernetes-asyncio chooses and sends them."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes_asyncio.client.exceptions import ApiException

from tests.kubeapi.objects import node, pod, resource_slice
from tests.support.kubeapi import KubeApiServer

MERGE = "application/merge-patch+json"


async def test_merge_patch_merges_maps_and_null_deletes(core: Any) -> None:
    await core.create_node(node("node-1", keep="yes", drop="yes"))
    patched = await core.patch_node("node-1", {"metadata": {"labels": {"drop": None, "new": "1"}}}, _content_type=MERGE)
    assert patched.metadata.labels == {"keep": "yes", "new": "1"}


async def test_strategic_merge_patch_merges_conditions_by_type(kube_api: KubeApiServer, core: Any) -> None:
    body = node("node-1")
    body["status"] = {"conditions": [{"type": "Ready", "status": "False"}, {"type": "DiskPressure", "status": "False"}]}
    await core.create_node(body)
    patch = {"status": {"conditions": [{"type": "Ready", "status": "True"}]}}
    await core.patch_node_status("node-1", patch)  # dict bodies go out as strategic merge patches
    stored = kube_api.store.get("nodes", "node-1")
    assert stored is not None
    conditions = {c["type"]: c["status"] for c in stored["status"]["conditions"]}
    assert conditions == {"Ready": "True", "DiskPressure": "False"}


async def test_strategic_merge_patch_unions_finalizers_and_replaces_other_lists(core: Any) -> None:
    body = node("node-1")
    body["metadata"]["finalizers"] = ["example.com/a"]
    body["spec"] = {"taints": [{"key": "a", "effect": "NoSchedule"}]}
    await core.create_node(body)
    patch = {"metadata": {"finalizers": ["example.com/b"]}, "spec": {"taints": [{"key": "b", "effect": "NoSchedule"}]}}
    patched = await core.patch_node("node-1", patch)
    assert patched.metadata.finalizers == ["example.com/a", "example.com/b"]
    assert [t.key for t in patched.spec.taints] == ["b"]


async def test_json_patch_applies_operations_in_order(core: Any) -> None:
    await core.create_node(node("node-1", a="1"))
    ops = [
        {"op": "test", "path": "/metadata/labels/a", "value": "1"},
        {"op": "add", "path": "/metadata/labels/b", "value": "2"},
        {"op": "remove", "path": "/metadata/labels/a"},
        {"op": "add", "path": "/spec", "value": {"unschedulable": True}},
    ]
    patched = await core.patch_node("node-1", ops)
    assert patched.metadata.labels == {"b": "2"}
    assert patched.spec.unschedulable is True


async def test_json_patch_failed_test_answers_422(core: Any) -> None:
    await core.create_node(node("node-1", a="1"))
    with pytest.raises(ApiException) as err:
        await core.patch_node("node-1", [{"op": "test", "path": "/metadata/labels/a", "value": "2"}])
    assert err.value.status == 422


async def test_json_patch_content_type_with_an_object_body_answers_400(core: Any) -> None:
    """CustomObjectsApi sends dict bodies as json-patch unless told otherwise; the server refuses."""
    await core.create_node(node("node-1"))
    with pytest.raises(ApiException) as err:
        await core.patch_node("node-1", {"metadata": {}}, _content_type="application/json-patch+json")
    assert err.value.status == 400


async def test_patch_with_stale_resource_version_conflicts(res: Any) -> None:
    created = await res.create_resource_slice(resource_slice("s", "node-1"))
    await res.patch_resource_slice("s", {"metadata": {"labels": {"x": "1"}}})
    stale = {"metadata": {"resourceVersion": created.metadata.resource_version, "labels": {"x": "2"}}}
    with pytest.raises(ApiException) as err:
        await res.patch_resource_slice("s", stale, _content_type=MERGE)
    assert err.value.status == 409


async def test_patched_result_is_validated(res: Any) -> None:
    await res.create_resource_slice(resource_slice("s", "node-1"))
    with pytest.raises(ApiException) as err:
        await res.patch_resource_slice("s", {"spec": {"bogus": 1}}, _content_type=MERGE)
    assert err.value.status == 422


async def test_status_patch_changes_only_status(core: Any) -> None:
    await core.create_namespaced_pod("default", pod("p"))
    patch = {"metadata": {"labels": {"ignored": "yes"}}, "status": {"phase": "Running"}}
    patched = await core.patch_namespaced_pod_status("p", "default", patch, _content_type=MERGE)
    assert patched.status.phase == "Running"
    assert not patched.metadata.labels
