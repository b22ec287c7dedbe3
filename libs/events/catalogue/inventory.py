"""What devices a node has. The full inventory lives in the KV bucket; these events say it changed."""

from __future__ import annotations

from typing import Literal

import msgspec

from libs.events.base import Event

InventoryReason = Literal["start", "resync", "mig-reconfigured", "device-lost", "device-back", "driver-reload"]


class InventoryChanged(Event, frozen=True, kw_only=True):
    domain = "inventory"
    topic = "changed"
    summary = "The node's device inventory changed; the new one is in the inventory KV bucket."

    generation: int
    reason: InventoryReason
    device_count: int
    added: list[str] = msgspec.field(default_factory=list)
    removed: list[str] = msgspec.field(default_factory=list)
    changed: list[str] = msgspec.field(default_factory=list)


class SlicesPublished(Event, frozen=True, kw_only=True):
    domain = "inventory"
    topic = "slices"
    summary = "The node's ResourceSlices were written to the API server (or the standalone store)."

    driver: str
    pool: str
    generation: int
    slice_count: int
    device_count: int
    created: int = 0
    updated: int = 0
    deleted: int = 0

    def ce_subject(self) -> str:
        return self.pool
