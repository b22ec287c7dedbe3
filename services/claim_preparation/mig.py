"""Dynamic MIG: create a claim's MIG device at prepare, destroy it at unprepare, both idempotent.

The checkpoint records a device to create *before* it is created, so a crash at any point leaves a record
naming it; rolling that record back (at the next prepare of the claim, or when the service starts) destroys
whatever exists under that name. That is the start-up cleanup of MIG devices that no prepared claim
references: the ones this driver created for claims that never completed. MIG devices it did not create
(static MIG, an operator's layout) are never destroyed.
"""

from __future__ import annotations

from libs.devices import DeviceBackend
from libs.devices.model import Inventory, MigDevice
from services.claim_preparation.devices import MigTarget


def find(inventory: Inventory, name: str) -> MigDevice | None:
    return next((device for device in inventory.mig_devices if device.name == name), None)


async def create(backend: DeviceBackend, target: MigTarget) -> MigTarget:
    """The target with its UUID and instance ids; one left by an interrupted attempt of the same claim is adopted.

    Only this claim can have planned this name (the device is locked, and no other record holds it), so a
    device already there under the name is the one an earlier attempt created.
    """
    existing = find(await backend.inventory(), target.name)
    if existing is not None:
        return target.created(existing)
    device = await backend.create_mig_device(target.parent_minor, target.profile, target.placement_start)
    return target.created(device)


async def destroy(backend: DeviceBackend, name: str) -> bool:
    """Destroy the MIG device called ``name`` if it exists; False when there was nothing to destroy."""
    existing = find(await backend.inventory(), name)
    if existing is None:
        return False
    await backend.destroy_mig_device(existing)
    return True
