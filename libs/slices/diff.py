"""What to create, update and delete to turn the published slices of a pool into the desired ones.

A pool changes as a whole: when anything in it changes, every slice gets the new pool generation (the
scheduler ignores slices of an older generation). So the diff is either empty, or it rewrites the pool.
Unchanged means: same slices, same content apart from what the server sets (resourceVersion, uid, managed
fields, a taint's timeAdded), and one generation across all of them; a pool left half-updated by a crash
is not unchanged, even if its content matches.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

ResourceSlice = dict[str, Any]


@dataclass(frozen=True)
class SliceDiff:
    create: list[ResourceSlice] = field(default_factory=list)
    update: list[ResourceSlice] = field(default_factory=list)
    delete: list[ResourceSlice] = field(default_factory=list)

    @property
    def unchanged(self) -> bool:
        return not (self.create or self.update or self.delete)


def next_pool_generation(existing: Sequence[ResourceSlice]) -> int:
    """The generation to build the desired slices with: one above any published slice's."""
    return max((s["spec"]["pool"]["generation"] for s in existing), default=0) + 1


def diff_slices(desired: Sequence[ResourceSlice], existing: Sequence[ResourceSlice]) -> SliceDiff:
    """Updates carry the existing resourceVersion, so a concurrent writer makes the update fail, not vanish."""
    current = {s["metadata"]["name"]: s for s in existing}
    if _same_pool(desired, current):
        return SliceDiff()
    wanted = {s["metadata"]["name"] for s in desired}
    return SliceDiff(
        create=[s for s in desired if s["metadata"]["name"] not in current],
        update=[_versioned(s, current[s["metadata"]["name"]]) for s in desired if s["metadata"]["name"] in current],
        delete=[s for name, s in current.items() if name not in wanted],
    )


def _same_pool(desired: Sequence[ResourceSlice], current: dict[str, ResourceSlice]) -> bool:
    if {s["metadata"]["name"] for s in desired} != set(current):
        return False
    if len({s["spec"]["pool"]["generation"] for s in current.values()}) > 1:
        return False
    return all(_comparable(s) == _comparable(current[s["metadata"]["name"]]) for s in desired)


def _comparable(resource_slice: ResourceSlice) -> dict[str, Any]:
    spec = dict(resource_slice["spec"])
    spec["pool"] = {k: v for k, v in spec["pool"].items() if k != "generation"}
    spec["devices"] = [_without_taint_times(device) for device in spec.get("devices") or ()]
    return {"ownerReferences": resource_slice["metadata"].get("ownerReferences") or [], "spec": spec}


def _without_taint_times(device: dict[str, Any]) -> dict[str, Any]:
    if "taints" not in device:
        return device
    return device | {"taints": [{k: v for k, v in t.items() if k != "timeAdded"} for t in device["taints"]]}


def _versioned(desired: ResourceSlice, existing: ResourceSlice) -> ResourceSlice:
    version = existing["metadata"].get("resourceVersion")
    if version is None:
        return desired
    return desired | {"metadata": desired["metadata"] | {"resourceVersion": version}}
