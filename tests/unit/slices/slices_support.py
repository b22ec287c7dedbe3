"""Inventories as the slice tests need them."""

from __future__ import annotations

import msgspec

from libs.devices.model import Inventory


def with_iommu_groups(inventory: Inventory) -> Inventory:
    """Every GPU in an IOMMU group of its own (10 + index), as on a host with the IOMMU on."""
    gpus = tuple(msgspec.structs.replace(gpu, iommu_group=10 + gpu.index) for gpu in inventory.gpus)
    return msgspec.structs.replace(inventory, gpus=gpus)
