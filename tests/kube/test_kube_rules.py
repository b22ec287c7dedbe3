"""The pure parts of libs/kube: keys, selections, write rules, errors, paths, backoff, mode choice."""

from __future__ import annotations

from typing import Any

import pytest

from libs.kube import NODES, PODS, RESOURCE_CLAIMS, RESOURCE_SLICES, custom_resource, resolve_mode
from libs.kube.backoff import Backoff
from libs.kube.cluster import resource_path, selector_query
from libs.kube.errors import (
    AlreadyExists,
    BadRequest,
    Conflict,
    Forbidden,
    Invalid,
    KubeError,
    Unavailable,
    error_for,
    status_body,
)
from libs.kube.local import Selection, key_filter, object_key, split_key
from libs.kube.object_rules import check_precondition, merge_patch, new_object, replaced_object
from libs.kube.selectors import check_fields, selected
from tests.kube.kube_support import COMPUTE_DOMAINS, claim, compute_domain, node, pod

Obj = dict[str, Any]


# --- keys ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("resource", "namespace", "name", "key"),
    [
        (NODES, None, "node-a", "nodes._.node-a"),
        (PODS, "team-a", "train", "pods.team-a.train"),
        (RESOURCE_SLICES, None, "node-a-gpu.gpudra.io-0", "resourceslices_resource_k8s_io._.node-a-gpu.gpudra.io-0"),
        (COMPUTE_DOMAINS, "default", "imex", "computedomains_resource_nvidia_com.default.imex"),
    ],
)
def test_keys_round_trip(resource: Any, namespace: str | None, name: str, key: str) -> None:
    assert object_key(resource, namespace, name) == key
    assert split_key(key) == (namespace, name)


def test_key_filters_cover_one_namespace_or_all() -> None:
    assert key_filter(PODS, "team-a") == "pods.team-a.>"
    assert key_filter(PODS, None) == "pods.*.>"
    assert key_filter(NODES, None) == "nodes._.>"


# --- watch selection ----------------------------------------------------------------------------------------


def test_a_watch_that_began_with_a_list_sees_entering_objects_as_added() -> None:
    selection = Selection(complete=True, present={"a"})
    assert selection.classify("b", "MODIFIED", matches=True) == "ADDED"
    assert selection.classify("b", "MODIFIED", matches=True) == "MODIFIED"
    assert selection.classify("a", "MODIFIED", matches=False) == "DELETED"
    assert selection.classify("a", "MODIFIED", matches=False) is None
    assert selection.classify("c", "DELETED", matches=True) is None  # never reported, never present


def test_a_watch_from_a_resource_version_reports_unknown_matching_objects_as_they_come() -> None:
    selection = Selection(complete=False)
    assert selection.classify("a", "MODIFIED", matches=True) == "MODIFIED"
    assert selection.classify("b", "DELETED", matches=True) == "DELETED"
    assert selection.classify("c", "MODIFIED", matches=False) is None


# --- selectors ----------------------------------------------------------------------------------------------


def test_selection_by_fields_and_labels() -> None:
    obj = pod("train", "node-a", app="llm")
    assert selected(obj, {"spec.nodeName": "node-a", "metadata.namespace": "default"}, {"app": "llm"})
    assert not selected(obj, {"spec.nodeName": "node-b"}, None)
    assert not selected(obj, None, {"app": "web"})
    assert selected(obj, {"status.phase": ""}, None)  # a missing field reads as ""


def test_only_indexed_fields_may_be_selected() -> None:
    check_fields(PODS, {"spec.nodeName": "a", "metadata.name": "b"})
    with pytest.raises(BadRequest, match=r"field label not supported: spec\.nodeName"):
        check_fields(RESOURCE_CLAIMS, {"spec.nodeName": "a"})


def test_selector_query_is_stable() -> None:
    query = selector_query({"spec.nodeName": "a", "spec.driver": "d"}, {"b": "2", "a": "1"})
    assert query == [("fieldSelector", "spec.driver=d,spec.nodeName=a"), ("labelSelector", "a=1,b=2")]


# --- write rules --------------------------------------------------------------------------------------------


def test_merge_patch_merges_maps_deletes_nulls_and_replaces_lists() -> None:
    target = {"a": {"b": 1, "c": 2}, "list": [1, 2], "keep": True}
    assert merge_patch(target, {"a": {"b": None, "d": 3}, "list": [3]}) == {
        "a": {"c": 2, "d": 3},
        "list": [3],
        "keep": True,
    }
    assert target == {"a": {"b": 1, "c": 2}, "list": [1, 2], "keep": True}


def test_create_sets_server_fields_and_drops_status_and_stray_namespace() -> None:
    obj = node("node-a") | {"status": {"capacity": {}}}
    obj["metadata"] |= {"namespace": "x", "uid": "client-made", "generation": 9}
    stored = new_object(NODES, obj, uid="u-1", created="2026-01-01T00:00:00Z")
    assert stored["metadata"] == {
        "name": "node-a",
        "labels": {},
        "uid": "u-1",
        "creationTimestamp": "2026-01-01T00:00:00Z",
    }
    assert "status" not in stored


def test_create_refuses_a_resource_version() -> None:
    obj = claim("train-0")
    obj["metadata"]["resourceVersion"] = "7"
    with pytest.raises(Invalid, match="resourceVersion should not be set"):
        new_object(RESOURCE_CLAIMS, obj, uid="u", created="t")


def test_put_keeps_server_fields_and_status_and_counts_spec_changes() -> None:
    current = new_object(RESOURCE_CLAIMS, claim("c"), uid="u-1", created="t") | {"status": {"reservedFor": []}}
    sent = claim("c") | {"status": {}}
    sent["spec"]["devices"]["requests"][0]["name"] = "gpus"
    new = replaced_object(RESOURCE_CLAIMS, current, sent)
    assert (new["metadata"]["uid"], new["metadata"]["generation"]) == ("u-1", 2)
    assert new["status"] == {"reservedFor": []}
    assert replaced_object(RESOURCE_CLAIMS, current, claim("c"))["metadata"]["generation"] == 1


def test_custom_resources_need_a_resource_version_to_update() -> None:
    current = compute_domain("imex")
    current["metadata"] |= {"resourceVersion": "5", "uid": "u"}
    with pytest.raises(Invalid, match=r"ComputeDomain default/imex: metadata\.resourceVersion"):
        check_precondition(COMPUTE_DOMAINS, current, compute_domain("imex"), "ComputeDomain default/imex")
    stale = compute_domain("imex")
    stale["metadata"]["resourceVersion"] = "4"
    with pytest.raises(Conflict):
        check_precondition(COMPUTE_DOMAINS, current, stale, "ComputeDomain default/imex")


def test_no_finalizer_may_be_added_while_deleting() -> None:
    current = compute_domain("imex")
    current["metadata"] |= {"deletionTimestamp": "t", "finalizers": ["a"]}
    adding = compute_domain("imex")
    adding["metadata"]["finalizers"] = ["a", "b"]
    with pytest.raises(Invalid, match="no new finalizers"):
        replaced_object(COMPUTE_DOMAINS, current, adding)


# --- errors and paths ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "reason", "error"),
    [
        (409, "AlreadyExists", AlreadyExists),
        (409, "Conflict", Conflict),
        (401, "Unauthorized", Forbidden),
        (422, "Invalid", Invalid),
        (500, "InternalError", Unavailable),
        (0, "", Unavailable),
        (405, "MethodNotAllowed", BadRequest),
    ],
)
def test_http_answers_map_to_typed_errors(code: int, reason: str, error: type[KubeError]) -> None:
    raised = error_for(code, {"message": "said the server", "reason": reason}, "Node node-a")
    assert type(raised) is error
    assert str(raised).startswith("Node node-a: ")
    assert "said the server" in str(raised)


def test_a_non_status_body_still_gives_an_error() -> None:
    assert status_body(b"<html>bad gateway</html>") is None
    assert str(error_for(502, None, "Node node-a")) == "Node node-a: HTTP 502"


def test_resource_paths() -> None:
    assert resource_path(NODES, None, "node-a") == "/api/v1/nodes/node-a"
    assert resource_path(PODS, "team-a", "train", "eviction") == "/api/v1/namespaces/team-a/pods/train/eviction"
    assert resource_path(PODS) == "/api/v1/pods"
    assert resource_path(RESOURCE_SLICES) == "/apis/resource.k8s.io/v1/resourceslices"
    domains = custom_resource("resource.nvidia.com", "v1beta1", "computedomains", "ComputeDomain")
    assert resource_path(domains, "default", "imex", "status") == (
        "/apis/resource.nvidia.com/v1beta1/namespaces/default/computedomains/imex/status"
    )


# --- backoff and mode ---------------------------------------------------------------------------------------


def test_backoff_doubles_to_a_cap_with_jitter_in_the_upper_half() -> None:
    backoff = Backoff(base=0.1, cap=1.0)
    assert [backoff.delay(n, 0.999999) for n in range(5)] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0])
    assert backoff.delay(3, 0.0) == pytest.approx(0.4)


@pytest.mark.parametrize(
    ("mode", "kubeconfig", "environ", "chosen"),
    [
        ("auto", "", {}, "local"),
        ("auto", "", {"KUBERNETES_SERVICE_HOST": "10.0.0.1"}, "cluster"),
        ("auto", "/etc/kubeconfig", {}, "cluster"),
        ("local", "/etc/kubeconfig", {"KUBERNETES_SERVICE_HOST": "10.0.0.1"}, "local"),
        ("cluster", "", {}, "cluster"),
    ],
)
def test_the_mode_resolves(mode: str, kubeconfig: str, environ: dict[str, str], chosen: str) -> None:
    assert resolve_mode(mode, kubeconfig, environ) == chosen


def test_an_unknown_mode_is_refused() -> None:
    with pytest.raises(KubeError, match="GPUDRA_KUBE_MODE='kind'"):
        resolve_mode("kind", "", {})
