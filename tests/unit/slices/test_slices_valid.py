"""Every simulated machine, both slice layouts, both MIG modes: valid for the API server, complete, named."""

import functools
from typing import Any

import kubernetes_validate
import pytest

from libs.devices.model import Inventory
from libs.devices.simulated import builtin_profiles, load_profile
from libs.devices.simulated.ops import initial_state, inventory_of
from libs.slices import DRIVER_NAME, MigMode, build_slices, pool_problems


@functools.cache
def inventory(profile: str) -> Inventory:
    return inventory_of(initial_state("node-a", load_profile(profile)))


def expected_names(inv: Inventory, mode: MigMode) -> set[str]:
    names = set()
    for gpu in inv.gpus:
        if not gpu.mig_enabled:
            names.add(gpu.name)
        elif mode is MigMode.STATIC:
            names |= {d.name for d in inv.mig_devices_of(gpu)}
        else:
            names.add(gpu.name)
            names |= {p.device_name(gpu.minor, pl.start) for p in inv.profiles_for(gpu) for pl in p.placements}
    return names


def devices(slices: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for s in slices for d in s["spec"].get("devices") or ()]


MATRIX = [(p, minor, mode) for p in builtin_profiles() for minor in (34, 35) for mode in MigMode]


@pytest.mark.parametrize(("profile", "minor", "mode"), MATRIX)
def test_slices_validate_and_offer_every_device(profile: str, minor: int, mode: MigMode) -> None:
    inv = inventory(profile)
    slices = build_slices(inv, k8s_minor=minor, generation=3, mig_mode=mode)
    for resource_slice in slices:
        kubernetes_validate.validate(resource_slice, f"1.{minor}.0", strict=True)
    assert pool_problems(slices, minor) == []
    assert {d["name"] for d in devices(slices)} == expected_names(inv, mode)
    assert {(s["spec"]["driver"], s["spec"]["nodeName"], s["spec"]["pool"]["name"]) for s in slices} == {
        (DRIVER_NAME, "node-a", "node-a")
    }


def test_dynamic_mig_on_135_puts_counter_sets_in_their_own_slice() -> None:
    slices = build_slices(inventory("dgx-h100-mig"), k8s_minor=35, generation=1, mig_mode=MigMode.DYNAMIC)
    assert len(slices) == 9
    counters_only, per_gpu = slices[0]["spec"], [s["spec"] for s in slices[1:]]
    assert "devices" not in counters_only
    assert [c["name"] for c in counters_only["sharedCounters"]] == [f"gpu-{i}-counter-set" for i in range(8)]
    assert all("sharedCounters" not in spec for spec in per_gpu)
    assert [{d["name"].split("-mig-")[0] for d in spec["devices"]} for spec in per_gpu] == [
        {f"gpu-{i}"} for i in range(8)
    ]
    assert [len(spec["devices"]) for spec in per_gpu] == [26] * 8


def test_dynamic_mig_on_134_combines_each_gpu_with_its_counter_set() -> None:
    slices = build_slices(inventory("dgx-h100-mig"), k8s_minor=34, generation=1, mig_mode=MigMode.DYNAMIC)
    assert len(slices) == 8
    for minor, resource_slice in enumerate(slices):
        spec = resource_slice["spec"]
        assert [c["name"] for c in spec["sharedCounters"]] == [f"gpu-{minor}-counter-set"]
        assert {use["counterSet"] for d in spec["devices"] for use in d["consumesCounters"]} == {
            f"gpu-{minor}-counter-set"
        }


def test_static_mig_hides_the_parent_and_keeps_whole_gpus_together() -> None:
    slices = build_slices(inventory("mixed-mig"), k8s_minor=35, generation=1)
    assert len(slices) == 1
    names = [d["name"] for d in devices(slices)]
    assert "gpu-0" not in names
    assert "gpu-3" not in names
    assert names[:2] == ["gpu-0-mig-1g10gb-19-0", "gpu-0-mig-1g10gb-19-1"]
    assert names[-4:] == ["gpu-4", "gpu-5", "gpu-6", "gpu-7"]
