"""The ComputeDomain API: the CRD as shipped, served by the test API server over HTTP, agrees with the structs
the controller reads and writes; the controller's rules (membership, status, the claim template it renders,
the channel config) are plain functions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes_asyncio.client import ApiClient, ApiextensionsV1Api, CustomObjectsApi
from kubernetes_asyncio.client.exceptions import ApiException

from libs.claims.configapi import DecodeProblem, decode_channel_config
from services.compute_domain.api import (
    API_VERSION,
    GROUP,
    VERSION,
    ApiObjectError,
    ComputeDomainSpec,
    ComputeDomainStatus,
    decode_domain,
    status_object,
)
from services.compute_domain.controller.membership import Refused, admit
from services.compute_domain.controller.render import workload_claim_template
from services.compute_domain.controller.status import domain_status
from services.compute_domain.roster import Member
from tests.kubeapi.objects import status_of
from tests.support.kubeapi import KubeApiServer

CRD_FILE = Path(__file__).resolve().parents[2] / "deploy" / "kustomize" / "base" / "computedomain-crd.yaml"
PLURAL = "computedomains"
CLIQUE = "6c1f6a52-3d0e-4b8a-9a57-1d2f0c9e7b31.1"
OTHER_RACK = "6c1f6a52-3d0e-4b8a-9a57-1d2f0c9e7b31.2"
T0, T1 = "2026-12-04T12:00:00Z", "2026-12-04T12:00:05Z"
ALLOCATION_MODE = "spec.channel.allocationMode"


def domain(name: str = "train", **spec: Any) -> dict[str, Any]:
    channel = {"resourceClaimTemplate": {"name": f"{name}-channel"}}
    return {
        "apiVersion": API_VERSION,
        "kind": "ComputeDomain",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"numNodes": 4, "channel": channel, **spec},
    }


@pytest.fixture
async def custom(kube_api: KubeApiServer) -> Any:
    async with kube_api.api_client() as client:
        yield await _installed(client)


async def _installed(client: ApiClient) -> Any:
    crds: Any = ApiextensionsV1Api(client)
    crd = await crds.create_custom_resource_definition(yaml.safe_load(CRD_FILE.read_text()))
    assert {c.type: c.status for c in crd.status.conditions}["Established"] == "True"
    return CustomObjectsApi(client)


async def create(custom: Any, body: dict[str, Any]) -> dict[str, Any]:
    created: dict[str, Any] = await custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, body)
    return created


async def test_the_shipped_crd_serves_domains_the_controller_can_read_and_status_it_can_write(custom: Any) -> None:
    created = await create(custom, domain())
    typed = decode_domain(created)
    assert (typed.spec.num_nodes, typed.spec.channel.resource_claim_template.name) == (4, "train-channel")
    members = [Member(node="gb-0", ip_address="10.0.0.1", clique_id=CLIQUE, index=0, ready=True)]
    status = domain_status(typed.spec, members, typed.status, now=T0, generation=typed.metadata.generation)
    created["status"] = status_object(status)
    written = await custom.replace_namespaced_custom_object_status(GROUP, VERSION, "default", PLURAL, "train", created)
    assert written["status"]["nodes"] == [
        {"name": "gb-0", "ipAddress": "10.0.0.1", "cliqueID": CLIQUE, "index": 0, "status": "Ready"}
    ]
    assert decode_domain(written).status == status


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"numNodes": -1}, "spec.numNodes"),
        (
            {"channel": {"resourceClaimTemplate": {"name": "x"}, "allocationMode": "Some"}},
            "spec.channel.allocationMode",
        ),
        ({"channel": {}}, "spec.channel.resourceClaimTemplate"),
    ],
)
async def test_a_bad_domain_is_refused_naming_the_field(custom: Any, spec: dict[str, Any], field: str) -> None:
    with pytest.raises(ApiException) as refused:
        await create(custom, domain(**spec))
    assert refused.value.status == 422
    assert [cause["field"] for cause in status_of(refused.value)["details"]["causes"]] == [field]


def test_the_spec_is_immutable_and_kubectl_shows_status_and_reason() -> None:
    """The test API server does not run CEL: the rule's presence is what can be checked here."""
    version = yaml.safe_load(CRD_FILE.read_text())["spec"]["versions"][0]
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert spec["x-kubernetes-validations"] == [{"rule": "self == oldSelf", "message": "spec is immutable"}]
    columns = {column["name"]: column["jsonPath"] for column in version["additionalPrinterColumns"]}
    assert columns["Status"] == ".status.status"
    assert columns["Reason"] == '.status.conditions[?(@.type=="Ready")].reason'


def stored(**spec: Any) -> dict[str, Any]:
    """A domain as the API server returns it (with its uid)."""
    body = domain(**spec)
    return {**body, "metadata": {**body["metadata"], "uid": "cd-uid-1", "generation": 1}}


def test_an_object_that_is_no_domain_is_named() -> None:
    with pytest.raises(ApiObjectError, match=r"ComputeDomain default/train: .*numNodes"):
        decode_domain(stored(numNodes="four"))


# --- membership ---------------------------------------------------------------------------------------------------


def member(node: str, index: int, clique: str = CLIQUE, ready: bool = True, reason: str = "") -> Member:
    return Member(
        node=node, ip_address=f"10.0.0.{index + 1}", clique_id=clique, index=index, ready=ready, reason=reason
    )


def test_members_get_the_smallest_free_slot_and_keep_theirs() -> None:
    members = {"gb-0": member("gb-0", 0), "gb-2": member("gb-2", 2)}
    assert admit("gb-1", CLIQUE, members) == 1
    assert admit("gb-2", CLIQUE, members) == 2
    assert admit("first", CLIQUE, {}) == 0


def test_another_clique_an_empty_one_and_a_full_one_are_refused_with_the_reason() -> None:
    members = {"gb-0": member("gb-0", 0)}
    with pytest.raises(Refused, match=f"node rack2-0 is in NVLink clique {OTHER_RACK}, the domain's is {CLIQUE}"):
        admit("rack2-0", OTHER_RACK, members)
    with pytest.raises(Refused, match="node cpu-0 has no NVLink fabric"):
        admit("cpu-0", "", members)
    full = {f"gb-{i}": member(f"gb-{i}", i) for i in range(18)}
    with pytest.raises(Refused, match="is full \\(18 nodes\\)"):
        admit("gb-18", CLIQUE, full)


# --- status -------------------------------------------------------------------------------------------------------


def spec(nodes: int) -> ComputeDomainSpec:
    return decode_domain(stored(numNodes=nodes)).spec


def test_waiting_then_ready_then_a_lost_daemon_says_which_and_why() -> None:
    waiting = domain_status(spec(4), [member("gb-0", 0)], ComputeDomainStatus(), now=T0, generation=1)
    assert (waiting.status, waiting.conditions[0].reason, waiting.conditions[0].message) == (
        "NotReady",
        "WaitingForNodes",
        "1 of 4 nodes joined",
    )
    four = [member(f"gb-{i}", i) for i in range(4)]
    ready = domain_status(spec(4), four, waiting, now=T1, generation=1)
    assert (ready.status, ready.conditions[0].reason, ready.conditions[0].last_transition_time) == (
        "Ready",
        "AllNodesReady",
        T1,
    )
    four[3] = member("gb-3", 3, ready=False, reason="IMEX daemon (pid 42) was killed by SIGKILL")
    lost = domain_status(spec(4), four, ready, now=T1, generation=1)
    assert (lost.status, lost.conditions[0].reason) == ("NotReady", "NodeNotReady")
    assert lost.conditions[0].message == "gb-3: IMEX daemon (pid 42) was killed by SIGKILL"
    assert [node.status for node in lost.nodes] == ["Ready", "Ready", "Ready", "NotReady"]


def test_nothing_changed_means_the_same_status_and_the_transition_time_stays() -> None:
    members = [member("gb-0", 0), member("gb-1", 1)]
    first = domain_status(spec(2), members, ComputeDomainStatus(), now=T0, generation=1)
    again = domain_status(spec(2), members, first, now=T1, generation=1)
    assert again == first


# --- what the controller owns, and the channel config --------------------------------------------------------------


def test_the_workload_claim_template_is_a_valid_one_naming_the_domain() -> None:
    channel = {"resourceClaimTemplate": {"name": "train-channel"}, "allocationMode": "All"}
    typed = decode_domain(stored(channel=channel))
    template = workload_claim_template(typed)
    kubernetes_validate.validate(template, "1.34.0", strict=True)
    [config] = template["spec"]["spec"]["devices"]["config"]
    parameters = config["opaque"]["parameters"]
    assert decode_channel_config(parameters).domain_id == "cd-uid-1"
    assert template["metadata"]["ownerReferences"][0]["uid"] == "cd-uid-1"


def test_channel_configs_are_decoded_strictly() -> None:
    good = {"apiVersion": API_VERSION, "kind": "ComputeDomainChannelConfig", "domainID": "u-1"}
    assert decode_channel_config(good).allocation_mode == "Single"
    with pytest.raises(DecodeProblem, match="unexpectedField"):
        decode_channel_config({**good, "unexpectedField": 1})
    with pytest.raises(DecodeProblem, match="domainID"):
        decode_channel_config({**good, "domainID": ""})
    with pytest.raises(DecodeProblem, match="apiVersion"):
        decode_channel_config({**good, "apiVersion": "resource.nvidia.com/v1beta1"})
