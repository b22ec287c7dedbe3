"""The node's inventory in the ``gpudra_inventory`` KV bucket: the current state every other part reads.

Key: the node's subject token; value: the ``Inventory`` JSON plus discovery's own bookkeeping (generation,
reason). Readers that know only ``Inventory`` (the kubelet shim) decode the same value and ignore the extra
fields, so the contract stays ``Inventory`` under the node token.

Writes are compare-and-set on the entry's revision: two discovery processes for one node (a rolling update
with a surge, a stuck old pod) cannot silently overwrite each other's generation; the loser reads again.
"""

from __future__ import annotations

import logging

import msgspec
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from libs.bus import Bus
from libs.bus.topology import INVENTORY_BUCKET
from libs.devices.model import Inventory
from libs.events import node_token
from libs.events.catalogue.inventory import InventoryReason

log = logging.getLogger(__name__)


class InventoryRecord(Inventory, frozen=True, kw_only=True):
    """What the bucket holds: the inventory, its generation (1, 2, ... per node) and why it last changed."""

    generation: int = 0
    reason: InventoryReason = "start"

    def inventory(self) -> Inventory:
        """The plain inventory (for content comparisons that must not see the bookkeeping)."""
        fields = {name: getattr(self, name) for name in Inventory.__struct_fields__}
        return Inventory(**fields)


def record_of(inventory: Inventory, *, generation: int, reason: InventoryReason) -> InventoryRecord:
    fields = {name: getattr(inventory, name) for name in Inventory.__struct_fields__}
    return InventoryRecord(**fields, generation=generation, reason=reason)


class StaleRecord(Exception):
    """Another writer changed the node's entry since it was read; read again and redo the decision."""


class InventoryStore:
    """Reads and writes one node's entry."""

    def __init__(self, kv: KeyValue, node: str) -> None:
        self._kv = kv
        self.node = node
        self.key = node_token(node)
        self.revision = 0
        """The entry's revision as last read or written (0: no entry)."""

    @classmethod
    async def open(cls, bus: Bus, node: str) -> InventoryStore:
        return cls(await bus.kv(INVENTORY_BUCKET), node)

    async def load(self) -> InventoryRecord | None:
        """The stored record, or None when there is none (or it cannot be read: it is then rewritten)."""
        try:
            entry = await self._kv.get(self.key)
        except KeyNotFoundError as exc:
            self.revision = (exc.entry.revision or 0) if exc.entry is not None else 0
            return None
        self.revision = entry.revision or 0
        try:
            return msgspec.json.decode(entry.value or b"", type=InventoryRecord)
        except msgspec.DecodeError as exc:
            log.warning(
                "unreadable inventory entry; it will be replaced",
                extra={"node": self.node, "revision": self.revision, "error": str(exc)},
            )
            return None

    async def save(self, record: InventoryRecord) -> None:
        """Writes ``record`` if the entry is still at the revision last seen, else raises ``StaleRecord``."""
        value = msgspec.json.encode(record)
        try:
            if self.revision:
                self.revision = await self._kv.update(self.key, value, last=self.revision)
            else:
                self.revision = await self._kv.create(self.key, value)
        except KeyWrongLastSequenceError as exc:
            raise StaleRecord(f"inventory of node {self.node} changed under us (revision {self.revision})") from exc
