"""Shares of a GPU by consumable capacity (KEP-5075): one MPS daemon per GPU, each claim a client with its limits.

The scheduler (here: the test, writing what a 1.36 scheduler writes) gives each claim a ``shareID`` and its
``consumedCapacity``; claim_preparation starts the GPU's daemon with the first share, gives every claim's
containers the client limits from what it consumed, refuses a share that does not fit beside the others, keeps
shares and claims holding the GPU whole apart, and stops the daemon with the last share.
"""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path
from typing import Any

import pytest

from libs.bus import Bus
from libs.events.catalogue import ClaimRef
from libs.kube import RESOURCE_CLAIMS, KubeApi
from libs.natsserver import EmbeddedNats
from services.claim_preparation.service import ClaimService
from services.claim_preparation.settings import Settings
from tests.claim_preparation.claim_prep_crash_support import crash_at
from tests.claim_preparation.claim_prep_support import (
    allocation,
    cdi_files,
    claim_object,
    gpu_config,
    opaque,
    prepare,
    serving,
    sim_state,
    spec_of,
    store_claim,
    unprepare,
    until_answering,
)
from tests.support.kubeapi.validation import builtin_validator, schema_version

KUBERNETES = schema_version("1.36")
GPU = "gpu-4"
"""A whole 80Gi H100 of the ``mixed-mig`` node."""
MINOR = 4


async def store_share(
    kube: KubeApi,
    name: str,
    consumed: dict[str, str],
    *,
    device: str = GPU,
    configs: list[dict[str, Any]] | None = None,
    extra: list[tuple[str, str]] | None = None,
) -> ClaimRef:
    """A claim allocated a share of ``device`` as a 1.36 scheduler leaves it (valid against the strict schema)."""
    created = await kube.create(RESOURCE_CLAIMS, claim_object(name, ["gpu", *(r for r, _ in extra or [])]))
    allocated = allocation([("gpu", device), *(extra or [])], configs or [])
    share = allocated["devices"]["results"][0]
    share |= {"shareID": str(uuid.uuid4()), "consumedCapacity": consumed}
    created["status"] = {"allocation": allocated}
    stored = await kube.update_status(RESOURCE_CLAIMS, created)
    validator = builtin_validator(KUBERNETES, "resource.k8s.io/v1", "ResourceClaim")
    assert [e.message for e in validator.iter_errors(stored)] == []
    return ClaimRef(namespace="default", name=name, uid=created["metadata"]["uid"])


def half(**more: str) -> dict[str, str]:
    return {"memory": "40Gi", "computePercent": "0", **more}


def client_env(settings: Settings, ref: ClaimRef) -> dict[str, str]:
    """The env the claim's one device gives its containers, from its CDI spec (checked against the schema)."""
    [device] = spec_of(settings, ref)["devices"]
    return dict(entry.split("=", 1) for entry in device["containerEdits"]["env"])


def daemon_dir(settings: Settings) -> Path:
    return settings.mps_path / "_gpus" / GPU


def daemon_running(settings: Settings) -> bool:
    """The simulated daemon's record, and the GPU in MPS mode with that daemon's pipe."""
    record = daemon_dir(settings) / "daemon.json"
    state = sim_state(settings)
    mps = state.sims[MINOR].mps
    if not record.exists():
        assert mps is None
        return False
    assert mps is not None
    assert mps.pipe_directory == str(daemon_dir(settings) / "pipe")
    assert json.loads(record.read_text())["devices"] == {GPU: next(g.uuid for g in state.gpus if g.minor == MINOR)}
    return True


async def test_two_halves_share_a_gpu_through_its_daemon_with_their_own_limits(
    bus: Bus, kube: KubeApi, service: ClaimService, settings: Settings
) -> None:
    first = await store_share(kube, "half-0", half())
    second = await store_share(kube, "half-1", half(computePercent="30"))
    for ref in (first, second):
        result = (await prepare(bus, ref)).results[ref.uid]
        assert result.error == ""
        [device] = result.devices
        assert (device.device, device.share_id is not None) == (GPU, True)
    assert daemon_running(settings)
    first_env, second_env = client_env(settings, first), client_env(settings, second)
    assert first_env["CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"] == "0=40960M"
    assert "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE" not in first_env  # it asked for no compute share: no cap
    assert second_env["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] == "30"
    assert first_env["CUDA_MPS_PIPE_DIRECTORY"] == second_env["CUDA_MPS_PIPE_DIRECTORY"] == "/tmp/nvidia-mps"

    # Unprepare of one leaves the other's daemon running; the last one stops it.
    assert (await unprepare(bus, first)).results[first.uid].error == ""
    assert daemon_running(settings)
    assert set(service.preparer.records) == {second.uid}
    assert (await unprepare(bus, second)).results[second.uid].error == ""
    assert not daemon_running(settings)
    assert not daemon_dir(settings).exists()
    assert cdi_files(settings) == []


async def test_a_share_that_does_not_fit_is_refused_naming_the_claims_that_hold_the_gpu(
    bus: Bus, kube: KubeApi, service: ClaimService, settings: Settings
) -> None:
    held = [await store_share(kube, f"half-{i}", half()) for i in range(2)]
    for ref in held:
        assert (await prepare(bus, ref)).results[ref.uid].error == ""
    # A scheduler would not allocate it; a racing or stale allocator might, and the node says no.
    third = await store_share(kube, "one-more", {"memory": "1Gi", "computePercent": "0"})
    error = (await prepare(bus, third)).results[third.uid].error
    assert "device gpu-4 has 80Gi memory, 80Gi of it held by claim default/half-0 (40Gi), claim default/half-1" in error
    assert "1Gi more does not fit (0 left)" in error
    assert len(cdi_files(settings)) == 2
    # Compute is a capacity like memory: two shares of 60 percent do not fit either.
    assert (await unprepare(bus, *held)).results[held[0].uid].error == ""
    greedy = [await store_share(kube, f"greedy-{i}", half(computePercent="60")) for i in range(2)]
    assert (await prepare(bus, greedy[0])).results[greedy[0].uid].error == ""
    error = (await prepare(bus, greedy[1])).results[greedy[1].uid].error
    assert "has 100 computePercent, 60 of it held by claim default/greedy-0 (60): 60 more does not fit" in error


async def test_shares_and_a_claim_holding_the_gpu_whole_stay_apart(
    bus: Bus, kube: KubeApi, service: ClaimService, settings: Settings
) -> None:
    share = await store_share(kube, "share-0", half())
    whole = await store_claim(kube, "whole-0", [("gpu", GPU)])
    assert (await prepare(bus, share)).results[share.uid].error == ""
    error = (await prepare(bus, whole)).results[whole.uid].error
    assert "device gpu-4 is already prepared a share for claim default/share-0" in error
    assert (await unprepare(bus, share)).results[share.uid].error == ""
    assert (await prepare(bus, whole)).results[whole.uid].error == ""
    error = (await prepare(bus, share)).results[share.uid].error
    assert "device gpu-4 is already prepared for claim default/whole-0" in error
    assert not daemon_running(settings)


@pytest.mark.parametrize(
    ("configs", "extra", "consumed", "expected"),
    [
        (
            [opaque(gpu_config(strategy="TimeSlicing"))],
            None,
            half(),
            "device gpu-4 is a share .* sharing.strategy TimeSlicing does not apply",
        ),
        (None, [("other", "gpu-5")], half(), "shares of gpu-4 besides gpu-5: a container talks"),
        (None, None, half(sm="10"), "consumes sm, which a shared GPU does not have"),
        (None, None, {"memory": "forty"}, "consumedCapacity.memory: 'forty' is not a quantity"),
    ],
)
async def test_a_share_the_node_cannot_serve_is_refused_before_anything_changes(
    configs: list[dict[str, Any]] | None,
    extra: list[tuple[str, str]] | None,
    consumed: dict[str, str],
    expected: str,
    *,
    bus: Bus,
    kube: KubeApi,
    service: ClaimService,
    settings: Settings,
) -> None:
    created = await kube.create(RESOURCE_CLAIMS, claim_object("bad-0", ["gpu", *(r for r, _ in extra or [])]))
    allocated = allocation([("gpu", GPU), *(extra or [])], configs or [])
    allocated["devices"]["results"][0] |= {"shareID": str(uuid.uuid4()), "consumedCapacity": consumed}
    created["status"] = {"allocation": allocated}
    await kube.update_status(RESOURCE_CLAIMS, created)
    ref = ClaimRef(namespace="default", name="bad-0", uid=created["metadata"]["uid"])
    error = (await prepare(bus, ref)).results[ref.uid].error
    assert re.search(expected, error), error
    assert service.preparer.records == {}
    assert cdi_files(settings) == []
    assert not daemon_running(settings)


FIRST_SHARE_POINTS = ("started", "sharing", "cdi", "completed", "unprepare-started", "spec-removed")
"""The crash child's points the first share of a GPU passes (it starts the daemon; it creates no MIG device)."""
JOINING_POINTS = tuple(point for point in FIRST_SHARE_POINTS if point != "sharing")
"""A share joining a running daemon starts nothing."""


@pytest.mark.parametrize(
    ("point", "joining"),
    [(point, False) for point in FIRST_SHARE_POINTS] + [(point, True) for point in JOINING_POINTS],
)
async def test_kill_9_of_a_share_at_any_step_leaves_the_gpu_as_the_other_shares_need_it(
    point: str,
    joining: bool,
    *,
    tmp_path: Path,
    nats_server: EmbeddedNats,
    bus: Bus,
    kube: KubeApi,
    settings: Settings,
) -> None:
    staying = await store_share(kube, "staying", half()) if joining else None
    crashing = await store_share(kube, "crashing", half())
    if staying is not None:
        async with serving(nats_server.url, settings):
            await until_answering(bus)
            assert (await prepare(bus, staying)).results[staying.uid].error == ""
    await crash_at(point, nats_server.url, tmp_path, crashing)
    async with serving(nats_server.url, settings) as service:
        await until_answering(bus)
        completed = {crashing.uid} if point == "completed" else set()
        assert set(service.preparer.records) == completed | ({staying.uid} if staying else set())
        assert daemon_running(settings) == bool(completed or staying)
        if staying is not None:
            assert client_env(settings, staying)["CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"] == "0=40960M"
        assert (await prepare(bus, crashing)).results[crashing.uid].error == ""
        assert daemon_running(settings)
        refs = [crashing, *([staying] if staying else [])]
        assert all(r.error == "" for r in (await unprepare(bus, *refs)).results.values())
        assert not daemon_running(settings)
        assert cdi_files(settings) == []


async def test_a_reboot_leaves_no_daemon_directory_behind(
    nats_server: EmbeddedNats, bus: Bus, kube: KubeApi, settings: Settings
) -> None:
    ref = await store_share(kube, "boot-0", half())
    async with serving(nats_server.url, settings):
        await until_answering(bus)
        assert (await prepare(bus, ref)).results[ref.uid].error == ""
    assert daemon_dir(settings).is_dir()
    Path(settings.boot_id_path).write_text("boot-2\n")
    async with serving(nats_server.url, settings) as service:
        await until_answering(bus)
        assert service.preparer.records == {}
        assert not daemon_dir(settings).exists()
