import copy
import functools
from typing import Any

import msgspec

from libs.devices.model import Inventory
from libs.devices.simulated import load_profile
from libs.devices.simulated.ops import initial_state, inventory_of
from libs.slices import DeviceTaint, build_slices, diff_slices, next_pool_generation


@functools.cache
def inventory() -> Inventory:
    return inventory_of(initial_state("node-a", load_profile("mixed-mig")))


def as_stored(slices: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What the API server returns: server-set metadata added, taints stamped with timeAdded."""
    stored = copy.deepcopy(slices)
    for n, resource_slice in enumerate(stored):
        resource_slice["metadata"] |= {
            "uid": f"uid-{n}",
            "resourceVersion": str(100 + n),
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "managedFields": [{"manager": "gpudra"}],
        }
        for device in resource_slice["spec"].get("devices") or ():
            for taint in device.get("taints", ()):
                taint.setdefault("timeAdded", "2026-01-01T00:00:00Z")
    return stored


TAINTS = {"gpu-5": [DeviceTaint(key="gpu.gpudra.io/xid", value="48", effect="NoSchedule")]}


def test_an_unchanged_pool_needs_nothing_even_with_a_new_candidate_generation() -> None:
    existing = as_stored(build_slices(inventory(), k8s_minor=35, generation=4, taints=TAINTS))
    desired = build_slices(inventory(), k8s_minor=35, generation=next_pool_generation(existing), taints=TAINTS)
    assert next_pool_generation(existing) == 5
    assert diff_slices(desired, existing).unchanged


def test_any_change_rewrites_the_pool_at_the_new_generation() -> None:
    existing = as_stored(build_slices(inventory(), k8s_minor=35, generation=4))
    desired = build_slices(inventory(), k8s_minor=35, generation=5, taints=TAINTS)
    diff = diff_slices(desired, existing)
    assert diff.create == []
    assert diff.delete == []
    assert [s["metadata"]["resourceVersion"] for s in diff.update] == ["100"]
    assert {s["spec"]["pool"]["generation"] for s in diff.update} == {5}


def test_slices_that_are_no_longer_needed_are_deleted_and_new_ones_created() -> None:
    existing = as_stored(build_slices(inventory(), k8s_minor=35, generation=1, mig_mode="dynamic"))  # type: ignore[arg-type]
    fewer = msgspec.structs.replace(inventory(), gpus=inventory().gpus[:2])
    desired = build_slices(fewer, k8s_minor=35, generation=2, mig_mode="dynamic")  # type: ignore[arg-type]
    diff = diff_slices(desired, existing)
    assert len(existing) == 6
    assert len(desired) == 3
    assert [s["metadata"]["name"] for s in diff.update] == [f"node-a-gpu.gpudra.io-{i}" for i in range(3)]
    assert [s["metadata"]["name"] for s in diff.delete] == [f"node-a-gpu.gpudra.io-{i}" for i in range(3, 6)]
    assert diff_slices(desired, []).create == desired


def test_a_half_updated_pool_is_not_unchanged() -> None:
    existing = as_stored(build_slices(inventory(), k8s_minor=35, generation=1, mig_mode="dynamic"))  # type: ignore[arg-type]
    existing[0]["spec"]["pool"]["generation"] = 2
    desired = build_slices(inventory(), k8s_minor=35, generation=3, mig_mode="dynamic")  # type: ignore[arg-type]
    assert len(diff_slices(desired, existing).update) == len(existing)


def test_an_owner_reference_is_part_of_the_content() -> None:
    existing = as_stored(build_slices(inventory(), k8s_minor=34, generation=1))
    owner = {"apiVersion": "v1", "kind": "Node", "name": "node-a", "uid": "u"}
    assert not diff_slices(build_slices(inventory(), k8s_minor=34, generation=2, owner=owner), existing).unchanged
