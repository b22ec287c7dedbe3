"""Consumable capacity (KEP-5075): the scheduler's rules, and shareable GPUs the API server takes."""

from __future__ import annotations

import functools
import re
from typing import Any

import kubernetes_validate
import pytest

from libs.devices.model import Inventory
from libs.devices.simulated import builtin_profiles, load_profile
from libs.devices.simulated.ops import initial_state, inventory_of
from libs.slices import MigMode, build_slices, pool_problems
from libs.slices.capacity import Capacity, CapacityError, Policy, Range, consumption, fit_problem, read_capacities
from libs.slices.sharing import shared_gpu_capacities
from tests.support.kubeapi.rules import resource_slice

GI = 2**30
MI = 2**20
MEMORY = Capacity(value=80 * GI, policy=Policy(default=80 * GI, valid_range=Range(min=GI, max=80 * GI, step=GI)))
SM = Capacity(value=100, policy=Policy(default=100, valid_values=(25, 50, 100)))


@pytest.mark.parametrize(
    ("requests", "expected"),
    [
        ({"memory": 20500 * MI, "sm": 30}, {"memory": 21 * GI, "sm": 50}),  # the KEP's worked example
        ({"memory": 1}, {"memory": GI, "sm": 100}),  # below min: min; not asked: the default
        ({"memory": 80 * GI, "sm": 100}, {"memory": 80 * GI, "sm": 100}),
        ({}, {"memory": 80 * GI, "sm": 100}),
    ],
)
def test_a_request_becomes_what_the_policy_gives(requests: dict[str, int], expected: dict[str, int]) -> None:
    assert consumption(requests, {"memory": MEMORY, "sm": SM}, "gpu-0") == expected


@pytest.mark.parametrize(
    ("requests", "problem"),
    [
        ({"memory": 81 * GI}, "memory 81Gi is over what one share may have (80Gi)"),
        ({"sm": 101}, "sm 101 is over the largest value it gives (100)"),
        ({"encoders": 1}, "device gpu-0 has no capacity encoders (it has memory, sm)"),
    ],
)
def test_a_request_the_device_cannot_give_makes_it_ineligible(requests: dict[str, int], problem: str) -> None:
    with pytest.raises(CapacityError, match=re.escape(problem)):
        consumption(requests, {"memory": MEMORY, "sm": SM}, "gpu-0")


def test_without_a_policy_a_request_is_taken_as_asked_and_no_request_takes_all() -> None:
    plain = {"memory": Capacity(value=10 * GI)}
    assert consumption({"memory": 3 * MI + 1}, plain, "d") == {"memory": 3 * MI + 1}
    assert consumption({}, plain, "d") == {"memory": 10 * GI}


def test_shares_fit_while_their_sum_is_at_most_the_value() -> None:
    capacities = {"memory": MEMORY}
    held = [("a", {"memory": 40 * GI}), ("b", {"memory": 39 * GI})]
    assert fit_problem("gpu-0", capacities, held, {"memory": GI}) is None
    assert fit_problem("gpu-0", capacities, held, {"memory": 2 * GI}) == (
        "device gpu-0 has 80Gi memory, 79Gi of it held by a (40Gi), b (39Gi): 2Gi more does not fit (1Gi left)"
    )


def test_capacities_read_back_from_a_slice_device_are_the_ones_published() -> None:
    published = {name: capacity.render() for name, capacity in shared_gpu_capacities(81559 * MI).items()}
    assert published["memory"] == {
        "value": "81559Mi",
        "requestPolicy": {"default": "79Gi", "validRange": {"min": "1Gi", "max": "79Gi", "step": "1Gi"}},
    }
    assert read_capacities({"name": "gpu-0", "capacity": published}) == shared_gpu_capacities(81559 * MI)
    with pytest.raises(CapacityError, match="device gpu-0 capacity memory: 'lots' is not a quantity"):
        read_capacities({"name": "gpu-0", "capacity": {"memory": {"value": "lots"}}})


@functools.cache
def inventory(profile: str) -> Inventory:
    return inventory_of(initial_state("node-a", load_profile(profile)))


def devices(slices: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for s in slices for d in s["spec"].get("devices") or ()]


@pytest.mark.parametrize(("profile", "mode"), [(p, mode) for p in builtin_profiles() for mode in MigMode])
def test_shareable_gpus_validate_against_every_version_and_the_api_servers_rules(profile: str, mode: MigMode) -> None:
    inv = inventory(profile)
    for minor in (34, 35, 36):
        slices = build_slices(inv, k8s_minor=minor, generation=1, mig_mode=mode, shared_gpus=True)
        for resource_slice_ in slices:
            kubernetes_validate.validate(resource_slice_, f"1.{minor}.0", strict=True)
            assert resource_slice(resource_slice_, None) == []
        assert pool_problems(slices, minor) == []
    whole = {gpu.name for gpu in inv.gpus if not gpu.mig_enabled}
    shared = {d["name"] for d in devices(slices) if d.get("allowMultipleAllocations")}
    assert shared == whole
    for device in devices(slices):
        if device["name"] in shared:
            assert set(device["capacity"]) == {"memory", "computePercent"}
        else:
            assert all("requestPolicy" not in c for c in device["capacity"].values())


def test_the_api_server_rules_refuse_a_policy_it_would_refuse() -> None:
    """The test API server's port of validateRequestPolicy fails where kube-apiserver does."""
    policy = {"default": "3Gi", "validRange": {"min": "1Gi", "max": "10Gi", "step": "2Gi"}}
    device: dict[str, Any] = {"name": "gpu-0", "capacity": {"memory": {"value": "10Gi", "requestPolicy": policy}}}
    spec = {"driver": "gpu.gpudra.io", "nodeName": "n", "pool": {"name": "n", "resourceSliceCount": 1}}
    errors = resource_slice({"spec": spec | {"devices": [device]}}, None)
    assert [e.message.rsplit(": ", 1)[-1] for e in errors] == [
        "allowMultipleAllocations must be true",
        "must be min plus a multiple of step",  # max 10Gi is 1Gi + 4.5 steps
    ]
    device["allowMultipleAllocations"] = True
    policy["default"] = "11Gi"
    errors = resource_slice({"spec": spec | {"devices": [device]}}, None)
    details = [e.message.rsplit(": ", 1)[-1] for e in errors]
    assert details == ["must be within the valid range", "must be min plus a multiple of step"]
