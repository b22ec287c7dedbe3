"""Objects are validated like kube-apiserver does: strict schemas plus the Go-only rules."""

from __future__ import annotations

import time
from typing import Any

import pytest
from kubernetes_asyncio.client import ApiClient
from kubernetes_asyncio.client.exceptions import ApiException

from tests.kubeapi.objects import device, node, resource_claim, resource_slice, status_of
from tests.support.kubeapi import KubeApiServer, Validator
from tests.support.kubeapi.resources import ResourceRegistry


async def rejected(res: Any, body: dict[str, Any]) -> dict[str, Any]:
    """Create the ResourceSlice, expecting 422, and return the Status."""
    with pytest.raises(ApiException) as err:
        await res.create_resource_slice(body)
    assert err.value.status == 422
    status: dict[str, Any] = status_of(err.value)
    assert status["reason"] == "Invalid"
    return status


def causes(status: dict[str, Any]) -> list[tuple[str, str]]:
    return [(c["field"], c["reason"]) for c in status["details"]["causes"]]


async def test_attribute_string_over_64_bytes(res: Any) -> None:
    body = resource_slice("s", "node-1", device("gpu-0", model={"string": "x" * 65}))
    status = await rejected(res, body)
    assert causes(status) == [("spec.devices[0].attributes[model].string", "FieldValueTooLong")]
    assert status["message"] == (
        'ResourceSlice.resource.k8s.io "s" is invalid: '
        "spec.devices[0].attributes[model].string: Too long: may not be more than 64 bytes"
    )


async def test_bad_device_name_and_duplicate(res: Any) -> None:
    body = resource_slice("s", "node-1", device("GPU_0"), device("gpu-1"), device("gpu-1"))
    status = await rejected(res, body)
    assert causes(status) == [
        ("spec.devices[0].name", "FieldValueInvalid"),
        ("spec.devices[2].name", "FieldValueDuplicate"),
    ]
    assert "RFC 1123 label" in status["details"]["causes"][0]["message"]


async def test_attribute_needs_exactly_one_value_and_a_semver_version(res: Any) -> None:
    body = resource_slice("s", "node-1", device("gpu-0", a={"int": 1, "bool": True}, b={"version": "1.0"}))
    fields = [field for field, _ in causes(await rejected(res, body))]
    assert fields == ["spec.devices[0].attributes[a]", "spec.devices[0].attributes[b].version"]


async def test_unknown_fields_and_wrong_types_fail_the_schema(res: Any) -> None:
    body = resource_slice("s", "node-1")
    body["spec"]["colour"] = "blue"
    body["spec"]["pool"]["generation"] = "one"
    found = causes(await rejected(res, body))
    assert ("spec.colour", "FieldValueInvalid") in found
    assert ("spec.pool.generation", "FieldValueTypeInvalid") in found


async def test_missing_required_field(res: Any) -> None:
    body = resource_slice("s", "node-1")
    del body["spec"]["driver"]
    assert causes(await rejected(res, body)) == [("spec.driver", "FieldValueRequired")]


async def test_exactly_one_node_selection_field(res: Any) -> None:
    body = resource_slice("s", "node-1")
    body["spec"]["allNodes"] = True
    status = await rejected(res, body)
    assert "multiple fields are set" in status["message"]


async def test_invalid_object_names(core: Any, res: Any) -> None:
    await rejected(res, resource_slice("Not_A_Name", "node-1"))
    with pytest.raises(ApiException) as err:
        await core.create_namespace({"metadata": {"name": "has.dots"}})  # namespaces are DNS labels
    assert err.value.status == 422


async def test_label_values_are_checked(core: Any) -> None:
    with pytest.raises(ApiException) as err:
        await core.create_node(node("node-1", zone="not a label value"))
    assert err.value.status == 422


async def test_lease_duration_must_be_positive(leases: Any) -> None:
    body = {"metadata": {"name": "l"}, "spec": {"leaseDurationSeconds": 0}}
    with pytest.raises(ApiException) as err:
        await leases.create_namespaced_lease("default", body)
    assert err.value.status == 422


async def test_driver_and_node_name_are_immutable(client: ApiClient, res: Any) -> None:
    created = client.sanitize_for_serialization(await res.create_resource_slice(resource_slice("s", "node-1")))
    created["spec"]["driver"] = "other.example.com"
    with pytest.raises(ApiException) as err:
        await res.replace_resource_slice("s", created)
    assert "field is immutable" in status_of(err.value)["message"]


async def test_validation_follows_the_server_version(client: ApiClient, kube_api: KubeApiServer, res: Any) -> None:
    kube_api.version = "v1.35.0"
    version = await client.call_api("/version", "GET", response_types_map={200: "object"}, _return_http_data_only=True)
    assert (version["gitVersion"], version["minor"]) == ("v1.35.0", "35")
    created = await res.create_resource_slice(resource_slice("s", "node-1"))
    assert created.metadata.name == "s"


def test_cached_validation_is_fast() -> None:
    validator = Validator("v1.34.0")
    rt = ResourceRegistry().resolve("resourceslices")
    body = resource_slice("s", "node-1", *[device(f"gpu-{i}") for i in range(8)])
    validator.check(rt, body)  # compiles and caches the validator
    start = time.perf_counter()
    for _ in range(200):
        validator.check(rt, body)
    assert time.perf_counter() - start < 1.0


async def test_a_share_id_must_be_a_uuid(res: Any, kube_api: KubeApiServer) -> None:
    kube_api.store.create(resource_claim("claim"))
    result = {"request": "gpu", "driver": "gpu.gpudra.io", "pool": "n", "device": "gpu-0", "shareID": "share-1"}
    status = {"status": {"allocation": {"devices": {"results": [result]}}}}
    with pytest.raises(ApiException) as err:
        await res.patch_namespaced_resource_claim_status("claim", "default", status)
    causes = status_of(err.value)["details"]["causes"]
    assert [c["field"] for c in causes] == ["status.allocation.devices.results[0].shareID"]
    result["shareID"] = "4a3b2c1d-5e6f-4a7b-8c9d-0e1f2a3b4c5d"
    await res.patch_namespaced_resource_claim_status("claim", "default", status)


async def test_claim_reservations_need_an_allocation(res: Any, kube_api: KubeApiServer) -> None:
    kube_api.store.create(resource_claim("claim"))
    status = {"status": {"reservedFor": [{"resource": "pods", "name": "p", "uid": "u-1"}]}}
    with pytest.raises(ApiException) as err:
        await res.patch_namespaced_resource_claim_status("claim", "default", status)
    assert [c["field"] for c in status_of(err.value)["details"]["causes"]] == ["status.reservedFor"]
