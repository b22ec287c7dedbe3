"""What the kubelet may send: several requests, repeats, conflicts, and bad input — each answered per claim."""

from __future__ import annotations

import json

import pytest

from libs.bus import Bus
from libs.events.catalogue import ClaimRef
from libs.kube import RESOURCE_CLAIMS, KubeApi
from services.claim_preparation.service import ClaimService
from services.claim_preparation.settings import Settings
from tests.claim_preparation.claim_prep_support import (
    STATIC_MIG,
    EventLog,
    cdi_files,
    claim_object,
    gpu_config,
    mig_config,
    opaque,
    prepare,
    sim_state,
    store_claim,
    unprepare,
)


async def test_two_requests_report_their_request_names_and_configs_by_precedence(
    bus: Bus, kube: KubeApi, service: ClaimService, settings: Settings
) -> None:
    configs = [
        opaque(gpu_config(strategy="TimeSlicing", timeSlicingConfig={"interval": "Short"}), source="FromClass"),
        opaque(gpu_config(strategy="TimeSlicing", timeSlicingConfig={"interval": "Medium"}), requests=["train"]),
        opaque(mig_config()),  # applies to every MIG device, skips the GPUs
    ]
    ref = await store_claim(kube, "pair-0", [("train", "gpu-4"), ("infer", "gpu-5"), ("small", STATIC_MIG)], configs)
    result = (await prepare(bus, ref)).results[ref.uid]
    assert result.error == ""
    assert [(d.request_names, d.device) for d in result.devices] == [
        (["train"], "gpu-4"),
        (["infer"], "gpu-5"),
        (["small"], STATIC_MIG),
    ]
    state = sim_state(settings)
    assert (state.sims[4].time_slice, state.sims[5].time_slice) == ("Medium", "Short")  # claim beats class
    [spec] = [json.loads(path.read_text()) for path in cdi_files(settings)]
    assert len(spec["devices"]) == 3


async def test_the_same_prepare_twice_gets_the_same_answer(
    bus: Bus, kube: KubeApi, service: ClaimService, events: EventLog
) -> None:
    ref = await store_claim(kube, "again-0", [("gpu", "gpu-4")])
    first = (await prepare(bus, ref)).results[ref.uid]
    await events.next("ClaimPrepared")
    second = (await prepare(bus, ref)).results[ref.uid]
    assert second == first
    assert second.error == ""
    # The repeat changed nothing, so it published nothing: the next event is the unprepare's.
    await unprepare(bus, ref)
    assert (await events.next("ClaimUnprepared"))["claim"]["uid"] == ref.uid
    assert [kind for kind, _ in events.seen] == ["ClaimPrepared", "ClaimUnprepared"]


async def test_unprepare_of_an_unknown_claim_succeeds(bus: Bus, service: ClaimService) -> None:
    ref = ClaimRef(namespace="default", name="never", uid="0b8e4f2e-0000-4000-8000-000000000001")
    assert (await unprepare(bus, ref)).results[ref.uid].error == ""
    assert (await unprepare(bus, ref)).results[ref.uid].error == ""


async def test_a_device_prepared_for_another_claim_is_refused(
    bus: Bus, kube: KubeApi, service: ClaimService, events: EventLog
) -> None:
    first = await store_claim(kube, "eval-1", [("gpu", "gpu-4")])
    second = await store_claim(kube, "train-0", [("gpu", "gpu-4")])
    assert (await prepare(bus, first)).results[first.uid].error == ""
    error = (await prepare(bus, second)).results[second.uid].error
    assert error == f"claim {second}: device gpu-4 is already prepared for claim default/eval-1"
    failed = await events.next("ClaimFailed")
    assert (failed["reason"], failed["operation"], failed["error"]) == ("DeviceBusy", "prepare", error)
    await unprepare(bus, first)
    assert (await prepare(bus, second)).results[second.uid].error == ""


async def test_two_claims_in_one_call_one_failing(
    bus: Bus, kube: KubeApi, service: ClaimService, settings: Settings
) -> None:
    good = await store_claim(kube, "good-0", [("gpu", "gpu-4")])
    bad = await store_claim(kube, "bad-0", [("gpu", "gpu-99")])
    reply = await prepare(bus, good, bad)
    assert set(reply.results) == {good.uid, bad.uid}
    assert reply.results[good.uid].error == ""
    assert "device gpu-99 does not exist on node node-a" in reply.results[bad.uid].error
    assert len(cdi_files(settings)) == 1
    assert set(service.preparer.records) == {good.uid}


async def _claim_with(kube: KubeApi, name: str, **allocation: object) -> ClaimRef:
    return await store_claim(kube, name, [("gpu", "gpu-4")], **allocation)  # type: ignore[arg-type]


BIG = "x" * (10 * 1024)


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("empty uid", "the claim UID is empty"),
        ("slash uid", "is path-like"),
        ("dotdot uid", "is path-like"),
        ("not found", "ResourceClaim default/ghost does not exist"),
        ("uid mismatch", "has uid"),
        ("other node", "it is allocated to node node-b, not to this node node-a"),
        ("other driver", "it is allocated to driver other.example.com, not to gpu.gpudra.io"),
        ("unknown device", "device gpu-42 does not exist on node node-a"),
        ("unknown field", "opaque config #0 (FromClaim, all requests): GpuConfig: unknown field sharing.mpsConfg"),
        ("not an object", "parameters must be a JSON object, not list"),
        ("oversized", "over the 10240-byte limit"),
        ("wrong kind for device", "a MigDeviceConfig cannot apply to request gpu, whose device gpu-4 is a full GPU"),
        ("unknown api", "apiVersion 'resource.nvidia.com/v1beta1' is not supported"),
    ],
)
async def test_bad_input_is_a_per_claim_error_and_the_service_keeps_serving(
    case: str, expected: str, *, bus: Bus, kube: KubeApi, service: ClaimService, settings: Settings
) -> None:
    ref = await _bad_claim(kube, case)
    result = (await prepare(bus, ref)).results[ref.uid]
    assert expected in result.error
    assert result.error.startswith(f"claim {ref.namespace}/{ref.name} (uid ")
    assert result.devices == []
    assert cdi_files(settings) == []
    good = await store_claim(kube, "good-after", [("gpu", "gpu-5")])
    assert (await prepare(bus, good)).results[good.uid].error == ""


async def _bad_claim(kube: KubeApi, case: str) -> ClaimRef:
    if case in ("empty uid", "slash uid", "dotdot uid"):
        uid = {"empty uid": "", "slash uid": "a/b", "dotdot uid": ".."}[case]
        return ClaimRef(namespace="default", name="odd", uid=uid)
    if case == "not found":
        return ClaimRef(namespace="default", name="ghost", uid="5f1d7a36-0000-4000-8000-000000000002")
    if case == "uid mismatch":
        ref = await store_claim(kube, "recreated", [("gpu", "gpu-4")])
        return ClaimRef(namespace=ref.namespace, name=ref.name, uid="5f1d7a36-0000-4000-8000-000000000003")
    if case == "other node":
        return await _claim_with(kube, "elsewhere", node="node-b")
    if case == "other driver":
        return await _claim_with(kube, "foreign", driver="other.example.com")
    if case == "unknown device":
        return await store_claim(kube, "nosuch", [("gpu", "gpu-42")])
    parameters = {
        "unknown field": gpu_config(strategy="MPS", mpsConfg={}),
        "not an object": ["GpuConfig"],
        "oversized": {**gpu_config(), "padding": BIG},
        "wrong kind for device": mig_config(),
        "unknown api": {"apiVersion": "resource.nvidia.com/v1beta1", "kind": "GpuConfig"},
    }[case]
    requests = ["gpu"] if case == "wrong kind for device" else []
    return await store_claim(kube, "configured", [("gpu", "gpu-4")], [opaque(parameters, requests=requests)])


async def test_an_unallocated_claim_is_refused(bus: Bus, kube: KubeApi, service: ClaimService) -> None:
    created = await kube.create(RESOURCE_CLAIMS, claim_object("pending", ["gpu"]))
    ref = ClaimRef(namespace="default", name="pending", uid=created["metadata"]["uid"])
    error = (await prepare(bus, ref)).results[ref.uid].error
    assert error.endswith("it is not allocated (status.allocation is empty)")
