"""Device status in the claim (KEP-4817): what claim_preparation writes in ``status.devices``, and when.

The writer runs as in production (its own task, a short delay); the tests wait for the claim to change through
the store's watch, and every claim they read is checked against the Kubernetes 1.36 strict schema.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from libs.bus import Bus
from libs.events.catalogue import ClaimRef, DeviceHealthChanged
from libs.kube import RESOURCE_CLAIMS, KubeApi
from services.claim_preparation.service import ClaimService
from services.claim_preparation.settings import Settings
from tests.claim_preparation.claim_prep_support import (
    DRIVER,
    DYNAMIC_MIG,
    NODE,
    machine,
    prepare,
    store_claim,
    unprepare,
)
from tests.support.kubeapi.validation import builtin_validator, schema_version

Claim = dict[str, Any]
VALIDATOR = builtin_validator(schema_version("1.36"), "resource.k8s.io/v1", "ResourceClaim")


def ours(claim: Claim) -> list[dict[str, Any]]:
    return [d for d in (claim.get("status") or {}).get("devices") or () if d["driver"] == DRIVER]


def ready(entry: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in entry["conditions"] if c["type"] == "Ready")


async def until_claim(kube: KubeApi, ref: ClaimRef, done: Callable[[Claim], bool]) -> Claim:
    """The claim once ``done`` holds for it (watching the store from the current version), schema-checked."""
    claim = await kube.get(RESOURCE_CLAIMS, ref.name, ref.namespace)
    if not done(claim):
        version = claim["metadata"]["resourceVersion"]
        events = kube.watch(RESOURCE_CLAIMS, ref.namespace, resource_version=version)
        async with asyncio.timeout(10), contextlib.aclosing(events):
            async for _, changed in events:
                if changed["metadata"]["name"] == ref.name and done(changed):
                    claim = changed
                    break
    assert [error.message for error in VALIDATOR.iter_errors(claim)] == []
    return claim


async def test_a_prepared_gpu_is_ready_with_its_uuid_and_cdi_ids_until_unprepared(
    bus: Bus, kube: KubeApi, service: ClaimService, settings: Settings
) -> None:
    ref = await store_claim(kube, "train-0", [("gpu", "gpu-4")])
    [device] = (await prepare(bus, ref)).results[ref.uid].devices
    claim = await until_claim(kube, ref, lambda c: bool(ours(c)))
    [entry] = ours(claim)
    assert (entry["pool"], entry["device"]) == (NODE, "gpu-4")
    assert (ready(entry)["status"], ready(entry)["reason"]) == ("True", "Prepared")
    gpu = next(g for g in (await (await machine(settings)).inventory()).gpus if g.name == "gpu-4")
    assert entry["data"] == {"uuid": gpu.uuid, "cdiDeviceIDs": device.cdi_device_ids}
    assert (await unprepare(bus, ref)).results[ref.uid].error == ""
    await until_claim(kube, ref, lambda c: not ours(c) and "devices" not in (c.get("status") or {}))


async def test_another_drivers_entries_are_left_as_they_are(bus: Bus, kube: KubeApi, service: ClaimService) -> None:
    ref = await store_claim(kube, "mixed-0", [("gpu", "gpu-5")])
    claim = await kube.get(RESOURCE_CLAIMS, ref.name, ref.namespace)
    theirs = {"driver": "nic.example.com", "pool": NODE, "device": "eth1", "networkData": {"interfaceName": "eth1"}}
    claim["status"]["devices"] = [theirs]
    await kube.update_status(RESOURCE_CLAIMS, claim)
    assert (await prepare(bus, ref)).results[ref.uid].error == ""
    claim = await until_claim(kube, ref, lambda c: bool(ours(c)))
    assert theirs in claim["status"]["devices"]
    assert (await unprepare(bus, ref)).results[ref.uid].error == ""
    claim = await until_claim(kube, ref, lambda c: not ours(c))
    assert claim["status"]["devices"] == [theirs]


async def test_a_failed_prepare_says_why_and_a_later_success_replaces_it(
    bus: Bus, kube: KubeApi, service: ClaimService
) -> None:
    holder = await store_claim(kube, "holder-0", [("gpu", "gpu-6")])
    assert (await prepare(bus, holder)).results[holder.uid].error == ""
    ref = await store_claim(kube, "second-0", [("gpu", "gpu-6")])
    assert "holder-0" in (await prepare(bus, ref)).results[ref.uid].error
    claim = await until_claim(kube, ref, lambda c: bool(ours(c)))
    [entry] = ours(claim)
    conditions = {c["type"]: c for c in entry["conditions"]}
    assert conditions["Ready"]["status"] == "False"
    assert conditions["PrepareFailed"]["status"] == "True"
    assert conditions["PrepareFailed"]["reason"] == "DeviceBusy"
    assert "holder-0" in conditions["PrepareFailed"]["message"]
    assert (await unprepare(bus, holder)).results[holder.uid].error == ""
    assert (await prepare(bus, ref)).results[ref.uid].error == ""
    claim = await until_claim(kube, ref, lambda c: [e["conditions"][0]["status"] for e in ours(c)] == ["True"])
    assert [c["type"] for c in ours(claim)[0]["conditions"]] == ["Ready"]


async def test_a_dynamic_mig_device_reports_its_placement(bus: Bus, kube: KubeApi, service: ClaimService) -> None:
    ref = await store_claim(kube, "mig-0", [("mig", DYNAMIC_MIG)])
    assert (await prepare(bus, ref)).results[ref.uid].error == ""
    [entry] = ours(await until_claim(kube, ref, lambda c: bool(ours(c))))
    mig = entry["data"]["mig"]
    assert (mig["profile"], mig["parent"], mig["placementStart"], mig["createdForClaim"]) == (
        "3g.40gb",
        "gpu-3",
        0,
        True,
    )
    assert entry["data"]["uuid"].startswith("MIG-")
    assert isinstance(mig["gpuInstance"], int)


async def test_the_ready_condition_follows_the_health_of_the_device(
    bus: Bus, kube: KubeApi, service: ClaimService
) -> None:
    ref = await store_claim(kube, "train-1", [("gpu", "gpu-7")])
    assert (await prepare(bus, ref)).results[ref.uid].error == ""
    await until_claim(kube, ref, lambda c: bool(ours(c)))
    sick = DeviceHealthChanged(node=NODE, pool=NODE, device="gpu-7", health="Unhealthy", reason="XID 79 (taints x)")
    await bus.publish(sick)
    claim = await until_claim(kube, ref, lambda c: [ready(e)["status"] for e in ours(c)] == ["False"])
    assert (ready(ours(claim)[0])["reason"], ready(ours(claim)[0])["message"]) == ("DeviceUnhealthy", sick.reason)
    await bus.publish(DeviceHealthChanged(node=NODE, pool=NODE, device="gpu-7", health="Healthy", reason="reset"))
    claim = await until_claim(kube, ref, lambda c: [ready(e)["status"] for e in ours(c)] == ["True"])
    assert ready(ours(claim)[0])["reason"] == "Prepared"


async def test_a_prepare_undone_before_its_status_was_written_costs_no_write(
    bus: Bus, kube: KubeApi, service: ClaimService
) -> None:
    ref = await store_claim(kube, "brief-0", [("gpu", "gpu-2")])
    before = (await kube.get(RESOURCE_CLAIMS, ref.name, ref.namespace))["metadata"]["resourceVersion"]
    assert (await prepare(bus, ref)).results[ref.uid].error == ""
    assert (await unprepare(bus, ref)).results[ref.uid].error == ""  # within the writer's delay
    writer = service.preparer.parts.device_status
    assert writer is not None
    await writer.flush()
    after = (await kube.get(RESOURCE_CLAIMS, ref.name, ref.namespace))["metadata"]["resourceVersion"]
    assert after == before


async def test_a_write_goes_against_the_claim_the_prepare_read_and_a_stale_one_is_read_again(
    bus: Bus, kube: KubeApi, service: ClaimService
) -> None:
    """The claim changed between the prepare's read and the status write (another driver wrote its entry): the
    write is refused by its resourceVersion, read again, and both entries end up there."""
    ref = await store_claim(kube, "raced-0", [("gpu", "gpu-1")])
    writer = service.preparer.parts.device_status
    assert writer is not None
    assert (await prepare(bus, ref)).results[ref.uid].error == ""
    claim = await kube.get(RESOURCE_CLAIMS, ref.name, ref.namespace)
    theirs = {"driver": "nic.example.com", "pool": NODE, "device": "eth2"}
    devices = [*claim["status"].get("devices", []), theirs]  # ours too, should the writer have been first
    await kube.update_status(RESOURCE_CLAIMS, claim | {"status": claim["status"] | {"devices": devices}})
    await writer.flush()
    claim = await until_claim(kube, ref, lambda c: bool(ours(c)))
    assert theirs in claim["status"]["devices"]
    assert (await unprepare(bus, ref)).results[ref.uid].error == ""
    await writer.flush()
    claim = await until_claim(kube, ref, lambda c: not ours(c))
    assert claim["status"]["devices"] == [theirs]
    assert writer._known == {}  # nothing kept of a claim that is done
