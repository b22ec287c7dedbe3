"""CustomResourceDefinitions: creating one serves its resource, validated by its schema."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes_asyncio import watch
from kubernetes_asyncio.client import ApiClient, ApiextensionsV1Api, CustomObjectsApi
from kubernetes_asyncio.client.exceptions import ApiException

from tests.kubeapi.objects import status_of
from tests.support.kubeapi import KubeApiServer

GROUP, VERSION, PLURAL = "resource.nvidia.com", "v1beta1", "computedomains"
MERGE = "application/merge-patch+json"

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "spec": {
            "type": "object",
            "required": ["numNodes"],
            "properties": {
                "numNodes": {"type": "integer", "minimum": 0},
                "channel": {
                    "type": "object",
                    "nullable": True,
                    "properties": {
                        "resourceClaimTemplate": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
                    },
                },
            },
        },
        "status": {"type": "object", "properties": {"status": {"type": "string", "enum": ["Ready", "NotReady"]}}},
    },
}

CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": f"{PLURAL}.{GROUP}"},
    "spec": {
        "group": GROUP,
        "scope": "Namespaced",
        "names": {
            "plural": PLURAL,
            "singular": "computedomain",
            "kind": "ComputeDomain",
            "listKind": "ComputeDomainList",
        },
        "versions": [
            {
                "name": VERSION,
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": SCHEMA},
            }
        ],
    },
}


def domain(name: str, nodes: Any = 2, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ComputeDomain",
        "metadata": {"name": name},
        "spec": {"numNodes": nodes, **spec},
    }


@pytest.fixture
async def custom(client: ApiClient) -> Any:
    """CustomObjectsApi, with the ComputeDomain CRD installed through the API."""
    crds: Any = ApiextensionsV1Api(client)
    crd = await crds.create_custom_resource_definition(CRD)
    assert {c.type: c.status for c in crd.status.conditions}["Established"] == "True"
    return CustomObjectsApi(client)


async def create(custom: Any, body: dict[str, Any]) -> dict[str, Any]:
    created: dict[str, Any] = await custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, body)
    return created


async def test_crd_serves_its_resource(custom: Any, kube_api: KubeApiServer) -> None:
    created = await create(custom, {**domain("cd"), "status": {"status": "Ready"}})
    fetched = await custom.get_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "cd")
    listed = await custom.list_namespaced_custom_object(GROUP, VERSION, "default", PLURAL)
    assert fetched["metadata"]["uid"] == created["metadata"]["uid"]
    assert "status" not in created  # the status subresource owns it
    assert [i["kind"] for i in listed["items"]] == ["ComputeDomain"]  # unstructured items keep their kind
    assert kube_api.store.get("computedomains.resource.nvidia.com", "cd", "default") is not None


async def test_discovery_lists_the_custom_resource(custom: Any, client: ApiClient) -> None:
    resources = await client.call_api(
        f"/apis/{GROUP}/{VERSION}", "GET", response_types_map={200: "object"}, _return_http_data_only=True
    )
    assert {r["name"] for r in resources["resources"]} == {PLURAL, f"{PLURAL}/status"}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**domain("cd"), "spec": {}}, "spec.numNodes"),
        (domain("cd", nodes="two"), "spec.numNodes"),
        (domain("cd", nodes=-1), "spec.numNodes"),
        (domain("cd", extra=True), "spec.extra"),
        (domain("Bad_Name"), "metadata.name"),
    ],
)
async def test_custom_objects_are_validated(custom: Any, body: dict[str, Any], field: str) -> None:
    with pytest.raises(ApiException) as err:
        await create(custom, body)
    assert err.value.status == 422
    assert [c["field"] for c in status_of(err.value)["details"]["causes"]] == [field]


async def test_nullable_and_preserved_fields_are_accepted(custom: Any) -> None:
    await create(custom, domain("a", channel=None))
    created = await create(custom, domain("b", channel={"resourceClaimTemplate": {"name": "x", "any": {"thing": 1}}}))
    assert created["spec"]["channel"]["resourceClaimTemplate"]["any"] == {"thing": 1}


async def test_custom_object_updates_need_a_resource_version(custom: Any) -> None:
    await create(custom, domain("cd"))
    with pytest.raises(ApiException) as err:
        await custom.replace_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "cd", domain("cd", nodes=3))
    assert err.value.status == 422
    assert "metadata.resourceVersion" in status_of(err.value)["message"]


async def test_patches_status_and_generation(custom: Any) -> None:
    await create(custom, domain("cd"))
    args = (GROUP, VERSION, "default", PLURAL, "cd")
    with pytest.raises(ApiException) as err:  # CustomObjectsApi's default for a dict is json-patch
        await custom.patch_namespaced_custom_object(*args, {"spec": {"numNodes": 3}})
    assert err.value.status == 400
    with pytest.raises(ApiException) as err:
        await custom.patch_namespaced_custom_object(
            *args, {"spec": {"numNodes": 3}}, _content_type="application/strategic-merge-patch+json"
        )
    assert err.value.status == 415
    spec = await custom.patch_namespaced_custom_object(*args, {"spec": {"numNodes": 3}}, _content_type=MERGE)
    status = await custom.patch_namespaced_custom_object_status(
        *args, {"status": {"status": "Ready"}}, _content_type=MERGE
    )
    assert (spec["metadata"]["generation"], spec["spec"]["numNodes"]) == (2, 3)
    assert (status["metadata"]["generation"], status["status"]["status"]) == (2, "Ready")


async def test_watch_custom_objects(custom: Any) -> None:
    start = (await custom.list_namespaced_custom_object(GROUP, VERSION, "default", PLURAL))["metadata"]
    await create(custom, domain("cd"))
    async with watch.Watch() as stream:
        events = stream.stream(
            custom.list_namespaced_custom_object,
            GROUP,
            VERSION,
            "default",
            PLURAL,
            resource_version=start["resourceVersion"],
            timeout_seconds=5,
        )
        event = await anext(aiter(events))
    assert (event["type"], event["object"]["metadata"]["name"]) == ("ADDED", "cd")


async def test_deleting_the_crd_deletes_its_objects(custom: Any, client: ApiClient) -> None:
    await create(custom, domain("cd"))
    await ApiextensionsV1Api(client).delete_custom_resource_definition(f"{PLURAL}.{GROUP}")
    with pytest.raises(ApiException) as err:
        await custom.list_namespaced_custom_object(GROUP, VERSION, "default", PLURAL)
    assert err.value.status == 404
