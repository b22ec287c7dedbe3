"""Admin access (KEP-5018, GA in 1.36): a monitoring claim gets a device as it is, beside the claim that holds it.

The scheduler gives an admin-access request a device even while another claim has it; the driver's part is to
hand out the device's CDI without touching its configuration, and never to count the admin claim as holding it.
"""

from __future__ import annotations

from typing import Any

from libs.bus import Bus
from libs.devices.model import TimeSliceInterval
from libs.events.catalogue import ClaimRef
from libs.kube import RESOURCE_CLAIMS, KubeApi
from services.claim_preparation.service import ClaimService
from services.claim_preparation.settings import Settings
from tests.claim_preparation.claim_prep_support import (
    DYNAMIC_MIG,
    allocation,
    cdi_files,
    claim_object,
    gpu_config,
    machine,
    opaque,
    prepare,
    sim_state,
    spec_of,
    store_claim,
    unprepare,
)
from tests.support.kubeapi.validation import builtin_validator, schema_version

KUBERNETES = schema_version("1.36")
ADMIN_NAMESPACE = "gpu-monitoring"
"""Labelled ``resource.kubernetes.io/admin-access: "true"`` in a cluster; the API server checks that, not the driver."""


def _time_sliced(interval: str) -> list[dict[str, Any]]:
    return [opaque(gpu_config(strategy="TimeSlicing", timeSlicingConfig={"interval": interval}))]


async def store_admin_claim(
    kube: KubeApi, name: str, devices: list[tuple[str, str]], configs: list[dict[str, Any]] | None = None
) -> ClaimRef:
    """An allocated claim whose requests and results carry ``adminAccess: true``, as the scheduler leaves it."""
    obj = claim_object(name, [r for r, _ in devices], namespace=ADMIN_NAMESPACE)
    for request in obj["spec"]["devices"]["requests"]:
        request["exactly"]["adminAccess"] = True
    created = await kube.create(RESOURCE_CLAIMS, obj)
    allocated = allocation(devices, configs or [])
    for result in allocated["devices"]["results"]:
        result["adminAccess"] = True
    created["status"] = {"allocation": allocated}
    stored = await kube.update_status(RESOURCE_CLAIMS, created)
    errors = [
        e.message for e in builtin_validator(KUBERNETES, "resource.k8s.io/v1", "ResourceClaim").iter_errors(stored)
    ]
    assert errors == []
    return ClaimRef(namespace=ADMIN_NAMESPACE, name=name, uid=created["metadata"]["uid"])


async def test_an_admin_claim_shares_a_held_gpu_without_touching_it(
    bus: Bus, kube: KubeApi, service: ClaimService, settings: Settings
) -> None:
    holder = await store_claim(kube, "train-0", [("gpu", "gpu-4")], _time_sliced("Long"))
    assert (await prepare(bus, holder)).results[holder.uid].error == ""
    # The admin claim's config asks for another interval: it is checked, and then not applied.
    admin = await store_admin_claim(kube, "inspect-0", [("gpu", "gpu-4")], _time_sliced("Short"))
    result = (await prepare(bus, admin)).results[admin.uid]
    assert result.error == ""
    assert [d.device for d in result.devices] == ["gpu-4"]
    [device] = spec_of(settings, admin)["devices"]
    assert [n["path"] for n in device["containerEdits"]["deviceNodes"]] == ["/dev/nvidia4"]
    assert sim_state(settings).sims[4].time_slice == TimeSliceInterval.LONG

    # The admin claim holds nothing: a second ordinary claim is refused for the first one alone.
    rival = await store_claim(kube, "train-1", [("gpu", "gpu-4")])
    refused = (await prepare(bus, rival)).results[rival.uid].error
    assert "train-0" in refused
    assert "inspect-0" not in refused

    assert (await unprepare(bus, admin)).results[admin.uid].error == ""
    assert sim_state(settings).sims[4].time_slice == TimeSliceInterval.LONG  # not reset by the admin's unprepare
    assert holder.uid in service.preparer.records
    assert (await unprepare(bus, holder)).results[holder.uid].error == ""
    assert sim_state(settings).sims[4].time_slice == TimeSliceInterval.DEFAULT


async def test_an_ordinary_claim_takes_a_gpu_an_admin_claim_watches(
    bus: Bus, kube: KubeApi, service: ClaimService
) -> None:
    admin = await store_admin_claim(kube, "inspect-1", [("gpu", "gpu-5")])
    assert (await prepare(bus, admin)).results[admin.uid].error == ""
    owner = await store_claim(kube, "train-2", [("gpu", "gpu-5")], _time_sliced("Long"))
    assert (await prepare(bus, owner)).results[owner.uid].error == ""


async def test_an_admin_claim_never_creates_a_mig_device(
    bus: Bus, kube: KubeApi, service: ClaimService, settings: Settings
) -> None:
    before = (await (await machine(settings)).inventory()).mig_devices
    admin = await store_admin_claim(kube, "inspect-2", [("mig", DYNAMIC_MIG)])
    error = (await prepare(bus, admin)).results[admin.uid].error
    assert f"MIG device {DYNAMIC_MIG} does not exist" in error
    assert "admin access takes devices as they are and never creates one" in error
    assert (await (await machine(settings)).inventory()).mig_devices == before
    assert cdi_files(settings) == []
