"""The publisher's decisions, without a network: owner, generation, and which writes a publish needs."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from libs.kube.slice_publisher import check_desired, owner_reference, plan_publish, synthetic_node_uid
from tests.kube.kube_support import gpus, pool

Obj = dict[str, Any]
OWNER = owner_reference("node-a", "uid-1")


def as_stored(slices: list[Obj], owner: Obj = OWNER) -> list[Obj]:
    """What the API answers after a publish: owner reference and server metadata added."""
    stored = copy.deepcopy(slices)
    for n, resource_slice in enumerate(stored):
        resource_slice["metadata"] |= {
            "ownerReferences": [owner],
            "uid": f"slice-uid-{n}",
            "resourceVersion": str(100 + n),
            "creationTimestamp": "2026-01-01T00:00:00Z",
        }
    return stored


def test_a_first_publish_creates_every_slice_owned_by_the_node() -> None:
    plan = plan_publish(pool("node-a", [gpus(0), gpus(1)]), [], OWNER)
    assert plan.generation == 1
    assert [s["metadata"]["ownerReferences"] for s in plan.diff.create] == [[OWNER], [OWNER]]
    assert not plan.diff.update
    assert not plan.diff.delete


def test_an_unchanged_pool_needs_no_write_and_keeps_its_generation() -> None:
    existing = as_stored(pool("node-a", [gpus(0, 1)], generation=3))
    plan = plan_publish(pool("node-a", [gpus(0, 1)], generation=1), existing, OWNER)
    assert plan.diff.unchanged
    assert plan.generation == 3


def test_a_new_owner_uid_rewrites_the_pool() -> None:
    existing = as_stored(pool("node-a", [gpus(0)]), owner_reference("node-a", "uid-of-the-old-node"))
    plan = plan_publish(pool("node-a", [gpus(0)]), existing, OWNER)
    assert [s["metadata"]["ownerReferences"] for s in plan.diff.update] == [[OWNER]]


def test_a_change_bumps_the_generation_above_every_published_slice() -> None:
    existing = as_stored(pool("node-a", [gpus(0), gpus(1)], generation=4))
    existing[1]["spec"]["pool"]["generation"] = 6  # a half-finished earlier publish
    plan = plan_publish(pool("node-a", [gpus(0)]), existing, OWNER)
    assert plan.generation == 7
    assert [s["spec"]["pool"]["generation"] for s in plan.diff.update] == [7]
    assert [s["metadata"]["resourceVersion"] for s in plan.diff.update] == ["100"]
    assert [s["metadata"]["name"] for s in plan.diff.delete] == ["node-a-gpu.gpudra.io-1"]


def test_a_higher_requested_generation_is_kept() -> None:
    existing = as_stored(pool("node-a", [gpus(0)], generation=2))
    assert plan_publish(pool("node-a", [gpus(1)], generation=10), existing, OWNER).generation == 10


def test_slices_of_another_node_are_a_caller_bug() -> None:
    with pytest.raises(ValueError, match="not node node-a's pool"):
        check_desired(pool("node-b", [gpus(0)]), driver="gpu.gpudra.io", node="node-a")


def test_the_synthetic_uid_is_stable_per_node() -> None:
    assert synthetic_node_uid("node-a") == synthetic_node_uid("node-a") != synthetic_node_uid("node-b")
