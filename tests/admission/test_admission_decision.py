"""The decision, pure: AdmissionReview in, response out, on good and bad configs of every kind of problem.

A refusal names the object and the field; other drivers' configs are not judged; templates and DeviceClasses are
read where their configs are; an update is refused only for what it changes. The refusal's Status is checked
against the Kubernetes 1.36 strict schema (AdmissionReview itself is not in kubernetes-validate's schemas: it is
no API object; the API server reads only its response).
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from libs.claims.configapi import API_VERSION, DecodeProblem, decode_parameters
from services.admission.decision import decide, decoders
from services.admission.review import AdmissionResponse, BadReview, read_review
from tests.admission.admission_support import (
    CD_DRIVER,
    DRIVER,
    Obj,
    channel_config,
    claim_template,
    device_class,
    gpu_config,
    mig_config,
    opaque,
    resource_claim,
    review,
)
from tests.support.kubeapi.validation import builtin_validator, schema_version

STATUS_SCHEMA = builtin_validator(schema_version("1.36"), "meta.k8s.io/v1", "Status")


JUDGED = decoders(DRIVER, CD_DRIVER)


def decided(body: Obj) -> AdmissionResponse:
    return decide(read_review(msgspec.json.encode(body)), JUDGED)


def refusal(body: Obj) -> Obj:
    """The refusal's Status as the API server reads it, checked against the schema."""
    response = decided(body)
    assert response.allowed is False
    assert response.uid == body["request"]["uid"]
    status: Obj = msgspec.json.decode(msgspec.json.encode(response.status))
    assert [error.message for error in STATUS_SCHEMA.iter_errors(status)] == []
    assert (status["code"], status["reason"], status["status"]) == (422, "Invalid", "Failure")
    return status


BAD = [
    pytest.param(
        gpu_config(sharing={"strategy": "MPS", "mpsConfg": {}}),
        "GpuConfig: unknown field sharing.mpsConfg",
        id="unknown-field",
    ),
    pytest.param(
        gpu_config(sharing={"strategy": "MPS", "mpsConfig": {"defaultActiveThreadPercentage": "half"}}),
        "GpuConfig: sharing.mpsConfig.defaultActiveThreadPercentage: Expected `int | null`, got `str`",
        id="wrong-type",
    ),
    pytest.param(
        gpu_config(sharing={"strategy": "MPS", "mpsConfig": {"defaultActiveThreadPercentage": 150}}),
        "GpuConfig: sharing.mpsConfig.defaultActiveThreadPercentage: Expected `int` <= 100",
        id="out-of-range",
    ),
    pytest.param(
        gpu_config(sharing={"strategy": "Exclusive"}),
        "GpuConfig: sharing.strategy: Invalid enum value 'Exclusive'",
        id="unknown-strategy",
    ),
    pytest.param(
        gpu_config(sharing={"strategy": "MPS", "mpsConfig": {"defaultPinnedDeviceMemoryLimit": "10Gb"}}),
        "GpuConfig: sharing.mpsConfig.defaultPinnedDeviceMemoryLimit: '10Gb' is not a quantity",
        id="bad-quantity",
    ),
    pytest.param(
        mig_config(sharing={"strategy": "TimeSlicing", "timeSlicingConfig": {"interval": "Long"}}),
        "MigDeviceConfig: unknown field sharing.timeSlicingConfig",
        id="time-slicing-on-a-mig-device",
    ),
    pytest.param(
        gpu_config(sharing={"strategy": "TimeSlicing", "mpsConfig": {"defaultActiveThreadPercentage": 50}}),
        "GpuConfig: sharing.mpsConfig is set but sharing.strategy is TimeSlicing",
        id="mps-settings-with-time-slicing",
    ),
    pytest.param(
        {"apiVersion": "resource.gpudra.io/v1", "kind": "GpuConfig"},
        "apiVersion 'resource.gpudra.io/v1' is not supported; use 'resource.gpudra.io/v1beta1'",
        id="api-version",
    ),
    pytest.param(
        {"apiVersion": API_VERSION, "kind": "TpuConfig"},
        "kind 'TpuConfig' is not one of GpuConfig, MigDeviceConfig",
        id="kind",
    ),
    pytest.param(["GpuConfig"], "parameters must be a JSON object, not list", id="not-an-object"),
    pytest.param(
        gpu_config(note="x" * 11_000),
        "parameters are 11072 bytes, over the 10240-byte limit",
        id="too-large",
    ),
]


@pytest.mark.parametrize(("parameters", "problem"), BAD)
def test_a_claim_with_a_bad_config_is_refused_naming_the_claim_and_the_field(parameters: Any, problem: str) -> None:
    good = opaque(gpu_config(sharing={"strategy": "TimeSlicing"}))
    status = refusal(review(resource_claim("train-0", good, opaque(parameters), namespace="ml")))
    field = "spec.devices.config[1].opaque.parameters"
    assert status["message"].startswith(f"ResourceClaim ml/train-0: {field}: "), status["message"]
    assert problem in status["message"]
    (cause,) = status["details"]["causes"]
    assert cause["field"] == field
    assert problem in cause["message"]
    assert status["details"] | {"causes": []} == {
        "name": "train-0",
        "group": "resource.k8s.io",
        "kind": "ResourceClaim",
        "causes": [],
    }


@pytest.mark.parametrize(
    "parameters",
    [
        gpu_config(),
        gpu_config(sharing={"strategy": "TimeSlicing", "timeSlicingConfig": {"interval": "Short"}}),
        gpu_config(
            sharing={
                "strategy": "MPS",
                "mpsConfig": {
                    "defaultActiveThreadPercentage": 50,
                    "defaultPinnedDeviceMemoryLimit": "10Gi",
                    "defaultPerDevicePinnedMemoryLimit": {"0": "5Gi"},
                },
            }
        ),
        mig_config(sharing={"strategy": "MPS", "mpsConfig": {"defaultActiveThreadPercentage": 25}}),
    ],
)
def test_a_claim_whose_configs_decode_is_admitted(parameters: Obj) -> None:
    response = decided(review(resource_claim("train-0", opaque(parameters, requests=["gpu"]))))
    assert (response.allowed, response.status) == (True, None)


def test_a_per_device_limit_for_a_device_the_claim_may_not_get_is_left_to_prepare() -> None:
    """Which devices the claim gets is known at allocation; the node refuses a key that names none of them."""
    parameters = gpu_config(
        sharing={"strategy": "MPS", "mpsConfig": {"defaultPerDevicePinnedMemoryLimit": {"7": "1Gi"}}}
    )
    assert decided(review(resource_claim("c", opaque(parameters)))).allowed


def test_every_bad_entry_is_named_by_its_index() -> None:
    status = refusal(
        review(
            resource_claim(
                "c",
                opaque(gpu_config(sharing={"strategy": "MPS", "mpsConfg": {}})),
                opaque(gpu_config()),
                opaque({"apiVersion": API_VERSION, "kind": "Nope"}),
            )
        )
    )
    assert [cause["field"] for cause in status["details"]["causes"]] == [
        "spec.devices.config[0].opaque.parameters",
        "spec.devices.config[2].opaque.parameters",
    ]
    assert status["message"].count("spec.devices.config[") == 2


def test_other_drivers_configs_are_not_judged() -> None:
    others = [
        opaque({"anything": ["goes"]}, driver="gpu.nvidia.com"),
        opaque({"apiVersion": "resource.nvidia.com/v1beta1", "kind": "ComputeDomainChannelConfig"}, driver="x.io"),
        {"requests": ["gpu"]},  # no opaque config at all
    ]
    assert decided(review(resource_claim("c", *others))).allowed
    assert decided(review(resource_claim("c"))).allowed, "no config"


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        pytest.param(channel_config(domainID=""), "domainID: Expected `str` of length >= 1", id="empty-domain"),
        pytest.param(channel_config(allocationMode="Some"), "allocationMode: Invalid enum value 'Some'", id="mode"),
        pytest.param(channel_config(domainId="u-1"), "unknown field domainId", id="misspelt"),
        pytest.param(gpu_config(), "kind 'GpuConfig' is not one of ComputeDomainChannelConfig", id="gpu-kind"),
    ],
)
def test_a_channel_config_is_judged_as_the_compute_domain_node_decodes_it(parameters: Obj, message: str) -> None:
    status = refusal(review(resource_claim("imex-0", opaque(parameters, driver=CD_DRIVER))))
    assert message in status["message"]
    assert decided(review(resource_claim("imex-1", opaque(channel_config(), driver=CD_DRIVER)))).allowed


def test_a_channel_config_under_the_gpu_driver_is_refused_as_no_gpu_config() -> None:
    status = refusal(review(resource_claim("c", opaque(channel_config()))))
    assert "kind 'ComputeDomainChannelConfig' is not one of GpuConfig, MigDeviceConfig" in status["message"]


def test_the_drivers_are_the_ones_the_settings_name() -> None:
    body = review(resource_claim("c", opaque({"kind": "Nope"}, driver="gpu.example.com")))
    assert decide(read_review(msgspec.json.encode(body)), JUDGED).allowed
    assert not decide(read_review(msgspec.json.encode(body)), decoders("gpu.example.com")).allowed
    assert not decide(read_review(msgspec.json.encode(body)), decoders(DRIVER, "gpu.example.com")).allowed
    channels = review(resource_claim("c", opaque({"kind": "Nope"}, driver=CD_DRIVER)))
    assert decide(read_review(msgspec.json.encode(channels)), decoders(DRIVER)).allowed, "empty: not judged"


def test_a_template_is_read_where_its_claims_configs_are() -> None:
    bad = opaque(gpu_config(sharing={"strategy": "MPS", "mpsConfg": {}}))
    status = refusal(review(claim_template("train", opaque(gpu_config()), bad, namespace="ml")))
    assert status["message"].startswith(
        "ResourceClaimTemplate ml/train: spec.spec.devices.config[1].opaque.parameters: GpuConfig: unknown field"
    )
    assert status["details"]["kind"] == "ResourceClaimTemplate"
    assert decided(review(claim_template("train", opaque(gpu_config())))).allowed


def test_a_device_class_is_read_where_its_configs_are() -> None:
    bad = opaque(mig_config(sharing={"strategy": "TimeSlicing", "timeSlicingConfig": {}}))
    status = refusal(review(device_class("shared.gpudra.io", bad)))
    assert status["message"] == (
        "DeviceClass shared.gpudra.io: spec.config[0].opaque.parameters: "
        "MigDeviceConfig: unknown field sharing.timeSlicingConfig"
    )
    assert decided(review(device_class("shared.gpudra.io", opaque(gpu_config())))).allowed


def test_an_update_is_judged_by_what_it_changes() -> None:
    """A claim stored with a bad config (before the webhook ran) still gets its finalizer; a DeviceClass whose
    config an update breaks does not get the update."""
    bad = opaque(gpu_config(sharing={"strategy": "MPS", "mpsConfg": {}}))
    stored = resource_claim("c", bad)
    finalized = resource_claim("c", bad)
    finalized["metadata"]["finalizers"] = ["resource.kubernetes.io/delete-protection"]
    assert decided(review(finalized, "UPDATE", old=stored)).allowed
    good_class = device_class("shared.gpudra.io", opaque(gpu_config()))
    broken_class = device_class("shared.gpudra.io", opaque(gpu_config()), bad)
    status = refusal(review(broken_class, "UPDATE", old=good_class))
    assert [cause["field"] for cause in status["details"]["causes"]] == ["spec.config[1].opaque.parameters"]


@pytest.mark.parametrize(("operation", "sub_resource"), [("DELETE", ""), ("UPDATE", "status"), ("CONNECT", "")])
def test_writes_that_cannot_bring_in_a_config_are_admitted(operation: str, sub_resource: str) -> None:
    bad = resource_claim("c", opaque({"kind": "Nope"}))
    assert decided(review(bad, operation, old=bad, sub_resource=sub_resource)).allowed


def test_other_resources_are_admitted() -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default"}, "spec": {}}
    assert decided(review(pod)).allowed


def test_a_claim_made_from_generate_name_is_named_by_its_prefix() -> None:
    body = review(resource_claim("", opaque({"kind": "Nope"})))
    body["request"]["object"]["metadata"] = {"generateName": "train-", "namespace": "default"}
    assert refusal(body)["message"].startswith("ResourceClaim default/train-*: ")


def test_an_object_without_the_kinds_shape_is_refused() -> None:
    body = review(resource_claim("c"))
    body["request"]["object"]["spec"] = {"devices": {"config": "all of them"}}
    (cause,) = refusal(body)["details"]["causes"]
    assert cause["field"] == "spec"
    assert "cannot be read" in cause["message"]


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"{not json", "not JSON"),
        (b'{"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview", "request": {}}', "apiVersion"),
        (b'{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}', "missing required field `request`"),
        (
            b'{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"uid": "",'
            b' "resource": {"version": "v1", "resource": "pods"}, "operation": "CREATE"}}',
            "request.uid",
        ),
        (
            b'{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"uid": "u",'
            b' "resource": {"version": "v1", "resource": "pods"}, "operation": "PATCH"}}',
            "request.operation",
        ),
    ],
)
def test_what_is_not_an_admission_review_is_refused_at_the_door(body: bytes, problem: str) -> None:
    with pytest.raises(BadReview) as raised:
        read_review(body)
    assert problem in str(raised.value)


def test_fields_the_decision_does_not_read_are_ignored() -> None:
    """A later API server may add fields to the review; it must still get an answer."""
    body = review(resource_claim("c"))
    body["request"]["somethingNew"] = {"x": 1}
    body["somethingElse"] = True
    assert decided(body).allowed


# --- the same rule as the node's ---------------------------------------------------------------------------

_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 200),
    st.sampled_from(["", "MPS", "TimeSlicing", "10Gi", "1e3", "Long", "x"]),
)
_sharing = st.fixed_dictionaries(
    {},
    optional={
        "strategy": _values,
        "mpsConfig": st.dictionaries(
            st.sampled_from(["defaultActiveThreadPercentage", "defaultPinnedDeviceMemoryLimit", "typo"]), _values
        ),
        "timeSlicingConfig": st.dictionaries(st.sampled_from(["interval", "typo"]), _values),
        "typo": _values,
    },
)
_parameters = st.fixed_dictionaries(
    {"apiVersion": st.sampled_from([API_VERSION, "resource.gpudra.io/v1"])},
    optional={"kind": st.sampled_from(["GpuConfig", "MigDeviceConfig", "Other"]), "sharing": _sharing},
)


@settings(max_examples=300, deadline=None)
@given(_parameters)
def test_a_config_is_admitted_exactly_when_the_node_would_decode_it(parameters: Obj) -> None:
    try:
        decode_parameters(parameters)
        decodes = True
    except DecodeProblem:
        decodes = False
    assert decided(review(resource_claim("c", opaque(parameters)))).allowed is decodes
