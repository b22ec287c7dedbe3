"""From an allocated claim and the node's devices to the plan the checkpoint records before anything changes, pure.

Every decision of a prepare is made here, before a lock is taken or a file written: which device each result
is (full GPU, existing MIG device, MIG device to create), which config applies to it, and what sharing each
config group needs. A claim with any problem (unknown device, bad config, a config that does not fit) fails
here without touching the node.

A result with admin access (KEP-5018: a claim in a namespace labelled ``resource.kubernetes.io/admin-access``,
for monitoring and troubleshooting) gets the device as it is, even while another claim holds it: it never
creates a MIG device and is never in a sharing group, so preparing it changes nothing on the GPU, and it does not
count as holding the device (see ``Preparer._holders``).
"""

from __future__ import annotations

from pathlib import Path

import msgspec

from libs.claims.allocation import AllocatedClaim, AllocationResult
from libs.claims.configapi import DeviceConfig
from libs.devices.model import Inventory
from services.claim_preparation.devices import Target, lock_key, resolve
from services.claim_preparation.errors import UnknownDevice
from services.claim_preparation.precedence import choose, decoded_candidates
from services.claim_preparation.record import PlannedDevice, SharingPlan
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


def plan_claim(claim: AllocatedClaim, inventory: Inventory, mps_root: Path, *, dynamic_mig: bool) -> ClaimPlan:
    candidates = decoded_candidates(claim)
    devices: list[PlannedDevice] = []
    groups: dict[str, _Group] = {}
    for result in claim.results:
        target = _resolve(result, inventory, dynamic_mig=dynamic_mig)
        choice = choose(candidates, result, target)  # an admin's config is still checked, and then not applied
        if not result.admin_access:
            groups.setdefault(choice.group, _Group(config=choice.config, members={})).members.setdefault(
                target.name, target
            )
        devices.append(
            PlannedDevice(
                request=result.request,
                pool=result.pool,
                target=target,
                group=ADMIN_GROUP if result.admin_access else choice.group,
                share_id=result.share_id,
                admin_access=result.admin_access,
            )
        )
    sharing = [
        plan_sharing(claim.ref.uid, name, group.config, list(group.members.values()), mps_root)
        for name, group in sorted(groups.items())
    ]
    return ClaimPlan(devices=tuple(devices), sharing=tuple(plan for plan in sharing if plan is not None))


def _resolve(result: AllocationResult, inventory: Inventory, *, dynamic_mig: bool) -> Target:
    if not result.admin_access:
        return resolve(result.device, inventory, dynamic_mig=dynamic_mig)
    try:
        return resolve(result.device, inventory, dynamic_mig=False)
    except UnknownDevice as exc:
        raise UnknownDevice(f"{exc.problem}; admin access takes devices as they are and never creates one") from None
