"""ResourceSlices for one node, built by a pure function from its inventory.

The output is plain dicts in the resource.k8s.io/v1 shape, ready for the API; the publisher (another
service) sends them and uses diff.py to touch only what changed. Names are deterministic, so a restarted
publisher finds its own slices again.
"""

import dataclasses
import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

from libs.devices.model import Inventory
from libs.slices.devices import Device, GpuGroup, MigMode, gpu_group
from libs.slices.layout import SliceContent, lay_out
from libs.slices.limits import SliceLimits, limits_for
from libs.slices.passthrough import NO_PASSTHROUGH, PassthroughGpus
from libs.slices.taints import DeviceTaint, allowed_taints

DRIVER_NAME = "gpu.gpudra.io"
API_VERSION = "resource.k8s.io/v1"
_MAX_NAME = 253

ResourceSlice = dict[str, Any]


def build_slices(
    inventory: Inventory,
    *,
    k8s_minor: int,
    generation: int,
    mig_mode: MigMode = MigMode.STATIC,
    taints: Mapping[str, Sequence[DeviceTaint]] | None = None,
    owner: Mapping[str, Any] | None = None,
    shared_gpus: bool = False,
    passthrough: PassthroughGpus = NO_PASSTHROUGH,
) -> list[ResourceSlice]:
    """All slices of the node's pool. `taints` is keyed by device name; `owner` is the Node's owner
    reference, so the slices go when the Node goes; `shared_gpus` publishes GPUs with MIG off as shareable by
    consumable capacity (``libs.slices.sharing``); `passthrough` names the GPUs also offered to VMs
    (``libs.slices.passthrough``)."""
    limits = limits_for(k8s_minor)
    taints = taints or {}
    groups = [
        _tainted(gpu_group(inventory, gpu, mig_mode, shared_gpus=shared_gpus, passthrough=passthrough), taints, limits)
        for gpu in sorted(inventory.gpus, key=lambda g: g.minor)
    ]
    contents = lay_out(groups, limits)
    pool = {"name": inventory.node, "generation": generation, "resourceSliceCount": len(contents)}
    return [_render(inventory.node, index, content, pool=pool, owner=owner) for index, content in enumerate(contents)]


def _tainted(group: GpuGroup, taints: Mapping[str, Sequence[DeviceTaint]], limits: SliceLimits) -> GpuGroup:
    return dataclasses.replace(
        group, devices=[_with_taints(d, taints.get(d["name"], ()), limits) for d in group.devices]
    )


def _with_taints(device: Device, taints: Sequence[DeviceTaint], limits: SliceLimits) -> Device:
    kept = allowed_taints(device["name"], taints, limits)
    return device | {"taints": kept} if kept else device


def slice_name(node: str, index: int, driver: str = DRIVER_NAME) -> str:
    """`<node>-<driver>-<n>`; a node name too long for that is shortened with a hash to stay unique."""
    prefix = f"{node}-{driver}"
    suffix = f"-{index}"
    if len(prefix) + len(suffix) > _MAX_NAME:
        digest = hashlib.sha256(node.encode()).hexdigest()[:10]
        keep = _MAX_NAME - len(suffix) - len(driver) - len(digest) - 2
        prefix = f"{node[:keep].rstrip('.-')}-{digest}-{driver}"
    return prefix + suffix


def _render(
    node: str, index: int, content: SliceContent, *, pool: dict[str, Any], owner: Mapping[str, Any] | None
) -> ResourceSlice:
    metadata: dict[str, Any] = {"name": slice_name(node, index)}
    if owner is not None:
        metadata["ownerReferences"] = [dict(owner)]
    spec: dict[str, Any] = {"driver": DRIVER_NAME, "nodeName": node, "pool": dict(pool)}
    if content.shared_counters:
        spec["sharedCounters"] = content.shared_counters
    if content.devices or not content.shared_counters:
        spec["devices"] = content.devices
    return {"apiVersion": API_VERSION, "kind": "ResourceSlice", "metadata": metadata, "spec": spec}
