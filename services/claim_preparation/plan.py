"""From an allocated claim and the node's devices to the plan the checkpoint records before anything changes, pure.

Every decision of a prepare is made here, before a lock is taken or a file written: which device each result
is (full GPU, existing MIG device, MIG device to create), which config applies to it, and what sharing each
config group needs. A claim with any problem (unknown device, bad config, a config that does not fit) fails
here without touching the node.

A result with admin access (KEP-5018: a claim in a namespace labelled ``resource.kubernetes.io/admin-access``,
for monitoring and troubleshooting) gets the device as it is, even while another claim holds it: it never
creates a MIG device and is never in a sharing group, so preparing it changes nothing on the GPU, and it does not
count as holding the device (see ``Preparer._holders``).

A result with a ``shareID`` is a share of a GPU shared by consumable capacity (``shares.py``): it is its GPU
daemon's MPS client, planned as one ``SharePlan`` for all the claim's shares. A ``gpu-<minor>-vfio`` result is a
GPU for a VM (``passthrough.py``): it takes no config, and its IOMMU group's endpoints are planned to move to
vfio-pci.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import msgspec

from libs.claims.allocation import AllocatedClaim, AllocationResult
from libs.claims.configapi import DeviceConfig
from libs.devices.model import Inventory
from libs.slices.passthrough import NO_PASSTHROUGH, PassthroughGpus
from services.claim_preparation.devices import Target, VfioTarget, lock_key, resolve
from services.claim_preparation.errors import UnknownDevice
from services.claim_preparation.passthrough import VFIO_GROUP, plan_passthrough
from services.claim_preparation.precedence import check_unconfigured, choose, decoded_candidates
from services.claim_preparation.record import Endpoint, PlannedDevice, SharingPlan
from services.claim_preparation.shares import SHARE_GROUP, check_share_config, plan_share
from services.claim_preparation.sharing import plan_sharing


class ClaimPlan(msgspec.Struct, frozen=True, kw_only=True):
    devices: tuple[PlannedDevice, ...]
    sharing: tuple[SharingPlan, ...]

    @property
    def lock_keys(self) -> list[str]:
        return sorted({lock_key(device.target) for device in self.devices})


ADMIN_GROUP = "admin"
"""The group of every admin-access device: no config group has this name, so no sharing edit reaches it."""


class _Group(msgspec.Struct, kw_only=True):
    config: DeviceConfig
    members: dict[str, Target] = {}


def plan_claim(
    claim: AllocatedClaim,
    inventory: Inventory,
    mps_root: Path,
    *,
    dynamic_mig: bool,
    passthrough: PassthroughGpus = NO_PASSTHROUGH,
) -> ClaimPlan:
    """Everything but the passthrough of VM GPUs, which needs their IOMMU groups read under the GPUs' locks
    (``with_passthrough``)."""
    candidates = decoded_candidates(claim)
    devices: list[PlannedDevice] = []
    groups: dict[str, _Group] = {}
    for result in claim.results:
        target = _resolve(result, inventory, dynamic_mig=dynamic_mig, passthrough=passthrough)
        if isinstance(target, VfioTarget):
            check_unconfigured(candidates, result, target)
            group = VFIO_GROUP
        else:
            choice = choose(candidates, result, target)  # an admin's config is still checked, and then not applied
            group = _group(result, choice.group)
            if group == SHARE_GROUP:
                check_share_config(target.name, choice.config)
            elif group != ADMIN_GROUP:
                groups.setdefault(group, _Group(config=choice.config, members={})).members.setdefault(
                    target.name, target
                )
        devices.append(
            PlannedDevice(
                request=result.request,
                pool=result.pool,
                target=target,
                group=group,
                share_id=result.share_id,
                consumed=result.consumed,
                admin_access=result.admin_access,
            )
        )
    sharing: list[SharingPlan | None] = [
        plan_sharing(claim.ref.uid, name, group.config, list(group.members.values()), mps_root)
        for name, group in sorted(groups.items())
    ]
    sharing.append(plan_share(claim.ref.uid, devices, inventory, mps_root))
    return ClaimPlan(devices=tuple(devices), sharing=tuple(plan for plan in sharing if plan is not None))


def with_passthrough(plan: ClaimPlan, endpoints: Mapping[int, tuple[Endpoint, ...]]) -> ClaimPlan:
    """The plan with its VM GPUs' passthrough, from their IOMMU groups' endpoints as read now."""
    passthrough = plan_passthrough(plan.devices, endpoints)
    return msgspec.structs.replace(plan, sharing=(*plan.sharing, *passthrough)) if passthrough else plan


def _group(result: AllocationResult, chosen: str) -> str:
    """An admin's device is in no config group; a share is its GPU daemon's client, in no config group either."""
    if result.admin_access:
        return ADMIN_GROUP
    return SHARE_GROUP if result.share_id else chosen


def _resolve(
    result: AllocationResult, inventory: Inventory, *, dynamic_mig: bool, passthrough: PassthroughGpus
) -> Target:
    if not result.admin_access:
        return resolve(result.device, inventory, dynamic_mig=dynamic_mig, passthrough=passthrough)
    try:
        return resolve(result.device, inventory, dynamic_mig=False)
    except UnknownDevice as exc:
        raise UnknownDevice(f"{exc.problem}; admin access takes devices as they are and never creates one") from None
