"""The API-server rules checker must catch what kubernetes-validate cannot, or the other tests prove little."""

import copy
import functools
from typing import Any

from libs.devices.simulated import load_profile
from libs.devices.simulated.ops import initial_state, inventory_of
from libs.slices import MigMode, build_slices, pool_problems, slice_problems


@functools.cache
def dynamic(minor: int) -> list[dict[str, Any]]:
    inventory = inventory_of(initial_state("node-a", load_profile("dgx-h100-mig")))
    return build_slices(inventory, k8s_minor=minor, generation=1, mig_mode=MigMode.DYNAMIC)


def broken(minor: int) -> list[dict[str, Any]]:
    return copy.deepcopy(dynamic(minor))


def test_camel_case_counter_names_are_not_dns_labels() -> None:
    slices = broken(35)
    counters = slices[0]["spec"]["sharedCounters"][0]["counters"]
    counters["copyEngines"] = counters.pop("copy-engines")
    assert any("counter name copyEngines is not a DNS label" in p for p in slice_problems(slices[0], 35))


def test_devices_beside_counter_sets_are_refused_from_135() -> None:
    slices = broken(35)
    slices[1]["spec"]["sharedCounters"] = slices[0]["spec"]["sharedCounters"][:1]
    assert any("not both" in p for p in slice_problems(slices[1], 35))


def test_too_many_devices_for_a_slice_with_counters() -> None:
    slices = broken(35)
    slices[1]["spec"]["devices"] = slices[1]["spec"]["devices"] + slices[2]["spec"]["devices"] * 2
    assert any("78 devices, the limit is 64" in p for p in slice_problems(slices[1], 35))


def test_long_strings_bad_versions_and_bad_names() -> None:
    slices = broken(34)
    device = slices[0]["spec"]["devices"][0]
    device["attributes"]["productName"] = {"string": "x" * 65}
    device["attributes"]["driverVersion"] = {"version": "535.104.05"}
    device["attributes"]["bad-name"] = {"int": 1}
    device["name"] = "GPU_0"
    problems = slice_problems(slices[0], 34)
    assert any("productName: string longer than 64" in p for p in problems)
    assert any("'535.104.05' is not a semantic version" in p for p in problems)
    assert any("bad-name: the name is not a C identifier" in p for p in problems)
    assert any("device name is not a DNS label" in p for p in problems)


def test_counter_sets_must_be_reachable_and_the_pool_consistent() -> None:
    slices = broken(34)
    slices[1]["spec"]["sharedCounters"] = []
    slices[2]["spec"]["pool"]["generation"] = 9
    problems = pool_problems(slices, 34)
    assert any("consumes from unknown counter set gpu-1-counter-set" in p for p in problems)
    assert any("disagree on generation" in p for p in problems)


def test_taints_over_the_limit_or_with_effects_too_new() -> None:
    slices = broken(34)
    slices[0]["spec"]["devices"][0]["taints"] = [{"key": f"a.b/t{i}", "effect": "None"} for i in range(5)]
    problems = slice_problems(slices[0], 34)
    assert any("effect None is not one of" in p for p in problems)
    assert any("5 taints, the limit is 4" in p for p in problems)
