"""Create/get/list/update/delete through kubernetes-asyncio, with the real server's answers."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes_asyncio.client import ApiClient
from kubernetes_asyncio.client.exceptions import ApiException

from tests.kubeapi.objects import node, pod, resource_claim, resource_slice, status_of
from tests.support.kubeapi import KubeApiServer


async def test_create_fills_metadata_and_get_returns_it(core: Any) -> None:
    created = await core.create_node(node("node-1"))
    fetched = await core.read_node("node-1")
    assert fetched.metadata.uid == created.metadata.uid
    assert int(fetched.metadata.resource_version) > 0
    assert fetched.metadata.creation_timestamp is not None
    assert created.metadata.generation is None  # nodes do not track generation


async def test_resource_versions_increase_globally(core: Any, res: Any) -> None:
    first = await core.create_node(node("node-1"))
    second = await res.create_resource_slice(resource_slice("slice-1", "node-1"))
    assert int(second.metadata.resource_version) > int(first.metadata.resource_version)
    assert second.metadata.generation == 1


async def test_generate_name_and_namespace_defaulting(core: Any) -> None:
    body = pod("", namespace="")
    body["metadata"] = {"generateName": "worker-"}
    created = await core.create_namespaced_pod("team-a", body)
    assert created.metadata.name.startswith("worker-")
    assert len(created.metadata.name) == len("worker-") + 5
    assert created.metadata.namespace == "team-a"
    assert created.status.phase == "Pending"


async def test_create_existing_answers_409_already_exists(core: Any) -> None:
    await core.create_node(node("node-1"))
    with pytest.raises(ApiException) as err:
        await core.create_node(node("node-1"))
    assert err.value.status == 409
    assert status_of(err.value)["reason"] == "AlreadyExists"
    assert status_of(err.value)["message"] == 'nodes "node-1" already exists'


async def test_get_missing_answers_404_status(res: Any) -> None:
    with pytest.raises(ApiException) as err:
        await res.read_resource_slice("nope")
    status = status_of(err.value)
    assert (err.value.status, status["reason"]) == (404, "NotFound")
    assert status["message"] == 'resourceslices.resource.k8s.io "nope" not found'
    assert status["details"] == {"name": "nope", "kind": "resourceslices", "group": "resource.k8s.io"}


async def test_list_is_sorted_and_carries_a_resource_version(core: Any) -> None:
    for name in ("pod-b", "pod-a"):
        await core.create_namespaced_pod("default", pod(name))
    await core.create_namespaced_pod("other", pod("pod-c", namespace="other"))
    listed = await core.list_namespaced_pod("default")
    everywhere = await core.list_pod_for_all_namespaces()
    assert [p.metadata.name for p in listed.items] == ["pod-a", "pod-b"]
    assert [p.metadata.name for p in everywhere.items] == ["pod-a", "pod-b", "pod-c"]
    assert int(listed.metadata.resource_version) >= int(listed.items[-1].metadata.resource_version)


async def test_update_with_stale_resource_version_answers_409_conflict(client: ApiClient, leases: Any) -> None:
    body = {"metadata": {"name": "leader"}, "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15}}
    created = await leases.create_namespaced_lease("default", body)
    fresh = client.sanitize_for_serialization(created)
    fresh["spec"]["holderIdentity"] = "b"
    await leases.replace_namespaced_lease("leader", "default", fresh)
    fresh["spec"]["holderIdentity"] = "c"  # still carries the first resourceVersion
    with pytest.raises(ApiException) as err:
        await leases.replace_namespaced_lease("leader", "default", fresh)
    assert (err.value.status, status_of(err.value)["reason"]) == (409, "Conflict")
    assert "the object has been modified" in status_of(err.value)["message"]


async def test_update_without_resource_version_is_unconditional(core: Any) -> None:
    await core.create_node(node("node-1"))
    updated = await core.replace_node("node-1", node("node-1", zone="a"))
    assert updated.metadata.labels == {"zone": "a"}


async def test_unchanged_update_keeps_resource_version(client: ApiClient, res: Any) -> None:
    created = await res.create_resource_slice(resource_slice("slice-1", "node-1"))
    same = await res.replace_resource_slice("slice-1", client.sanitize_for_serialization(created))
    assert same.metadata.resource_version == created.metadata.resource_version


async def test_spec_change_bumps_generation_label_change_does_not(client: ApiClient, res: Any) -> None:
    created = client.sanitize_for_serialization(await res.create_resource_slice(resource_slice("s", "node-1")))
    created["metadata"]["labels"] = {"a": "b"}
    relabelled = client.sanitize_for_serialization(await res.replace_resource_slice("s", created))
    relabelled["spec"]["pool"]["generation"] = 2
    bumped = await res.replace_resource_slice("s", relabelled)
    assert (relabelled["metadata"]["generation"], bumped.metadata.generation) == (1, 2)


async def test_status_subresource_owns_status(client: ApiClient, res: Any) -> None:
    claim = client.sanitize_for_serialization(
        await res.create_namespaced_resource_claim("default", resource_claim("claim"))
    )
    reservation = {"reservedFor": [{"resource": "pods", "name": "p", "uid": "u-1"}]}
    claim["status"] = {"allocation": {"devices": {"results": []}}, **reservation}
    ignored = await res.replace_namespaced_resource_claim("claim", "default", claim)
    assert ignored.status is None or ignored.status.allocation is None
    claim["metadata"]["labels"] = {"ignored": "yes"}
    stored = await res.replace_namespaced_resource_claim_status("claim", "default", claim)
    assert stored.status.reserved_for[0].uid == "u-1"
    assert stored.metadata.labels is None  # status writes change nothing else


async def test_claim_requests_are_defaulted_and_spec_is_immutable(client: ApiClient, res: Any) -> None:
    claim = client.sanitize_for_serialization(
        await res.create_namespaced_resource_claim("default", resource_claim("claim"))
    )
    exactly = claim["spec"]["devices"]["requests"][0]["exactly"]
    assert (exactly["allocationMode"], exactly["count"]) == ("ExactCount", 1)
    exactly["count"] = 2
    with pytest.raises(ApiException) as err:
        await res.replace_namespaced_resource_claim("claim", "default", claim)
    assert err.value.status == 422
    assert status_of(err.value)["details"]["causes"][0]["field"] == "spec"


async def test_url_and_body_must_agree(core: Any) -> None:
    await core.create_namespaced_pod("default", pod("p"))
    cases = [
        core.create_namespaced_pod("default", pod("q", namespace="other")),
        core.replace_namespaced_pod("p", "default", pod("other-name")),
        core.create_namespaced_pod("default", {**pod("r"), "apiVersion": "v2"}),
    ]
    for call in cases:
        with pytest.raises(ApiException) as err:
            await call
        assert (err.value.status, status_of(err.value)["reason"]) == (400, "BadRequest")


async def test_pod_spec_updates_are_forbidden_except_images(core: Any) -> None:
    await core.create_namespaced_pod("default", pod("p"))
    new_image = pod("p")
    new_image["spec"]["containers"][0]["image"] = "busybox:2"
    await core.replace_namespaced_pod("p", "default", new_image)
    with pytest.raises(ApiException) as err:
        await core.replace_namespaced_pod("p", "default", pod("p", node_name="node-1"))
    assert err.value.status == 422
    assert "pod updates may not change fields" in status_of(err.value)["message"]


async def test_delete_returns_status_for_nodes_and_the_object_for_pods(core: Any) -> None:
    await core.create_node(node("node-1"))
    await core.create_namespaced_pod("default", pod("p"))
    node_answer = await core.delete_node("node-1")
    pod_answer = await core.delete_namespaced_pod("p", "default")
    assert (node_answer.status, node_answer.details.name) == ("Success", "node-1")
    assert pod_answer.metadata.name == "p"
    with pytest.raises(ApiException) as err:
        await core.read_node("node-1")
    assert err.value.status == 404


async def test_delete_preconditions(core: Any) -> None:
    created = await core.create_node(node("node-1"))
    for preconditions in ({"uid": "not-the-uid"}, {"resourceVersion": "1"}):
        with pytest.raises(ApiException) as err:
            await core.delete_node("node-1", body={"preconditions": preconditions})
        assert err.value.status == 409
        assert "Precondition failed" in status_of(err.value)["message"]
    await core.delete_node("node-1", body={"preconditions": {"uid": created.metadata.uid}})


async def test_finalizers_hold_deletion_until_removed(kube_api: KubeApiServer, core: Any) -> None:
    body = node("node-1")
    body["metadata"]["finalizers"] = ["example.com/keep"]
    await core.create_node(body)
    await core.delete_node("node-1")
    marked = await core.read_node("node-1")
    assert marked.metadata.deletion_timestamp is not None
    await core.patch_node("node-1", {"metadata": {"finalizers": None}})
    assert kube_api.store.get("nodes", "node-1") is None


async def test_unknown_resources_answer_404(client: ApiClient) -> None:
    for path in ("/apis/example.com/v1/widgets", "/api/v1/namespaces/default/nodes/x", "/api/v1/pods/x"):
        with pytest.raises(ApiException) as err:
            await client.call_api(path, "GET", response_types_map={}, _return_http_data_only=True)
        assert err.value.status == 404, path


async def test_delete_collection_honours_selectors(res: Any, kube_api: KubeApiServer) -> None:
    for name, node_name in (("a", "node-1"), ("b", "node-1"), ("c", "node-2")):
        kube_api.store.create(resource_slice(name, node_name))
    await res.delete_collection_resource_slice(field_selector="spec.nodeName=node-1")
    assert [s["metadata"]["name"] for s in kube_api.store.list("resourceslices")] == ["c"]
