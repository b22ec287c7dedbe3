"""The node's active conditions, kept in one small file so a restarted monitor knows what it had reported.

Without it a condition that clears while the health service is down would never get its healthy event (the
controller would keep the device quarantined), and a condition re-reported after a restart would get a new
event id. Each entry keeps the occurrence the event id was derived from, so the re-report carries the same id
and JetStream drops it within its de-duplication window.

The file is replaced atomically (temporary file, fsync, rename, directory fsync) and readable only by its
owner; an unreadable file is set aside with a warning and the ledger starts empty (the monitors then
re-discover what is active on their first pass). A failed write is logged and monitoring goes on: a full or
read-only disk must not silence the monitors.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import msgspec

from libs.files import write_atomically
from services.health.monitors.conditions import Condition

log = logging.getLogger(__name__)

FILE_NAME = "monitor-conditions.json"
FILE_MODE = 0o600
DIR_MODE = 0o700


class ActiveCondition(msgspec.Struct, frozen=True, kw_only=True):
    condition: Condition
    occurrence: str
    """What made the fault's event id (an ISO timestamp); the clearing event's id derives from it too."""


class LedgerFile(msgspec.Struct, frozen=True, kw_only=True):
    version: int = 1
    node: str
    active: list[ActiveCondition] = msgspec.field(default_factory=list)


class ConditionLedger:
    """Active conditions by key; ``directory`` None keeps them in memory only."""

    def __init__(self, node: str, directory: Path | None, entries: dict[str, ActiveCondition]) -> None:
        self.node = node
        self._path = None if directory is None else directory / FILE_NAME
        self._entries = entries
        self._lock = asyncio.Lock()

    @classmethod
    async def load(cls, node: str, directory: Path | None) -> ConditionLedger:
        if directory is None:
            return cls(node, None, {})
        entries = await asyncio.to_thread(_read, directory / FILE_NAME, node)
        return cls(node, directory, {entry.condition.key: entry for entry in entries})

    def get(self, key: str) -> ActiveCondition | None:
        return self._entries.get(key)

    def entries(self) -> list[ActiveCondition]:
        return list(self._entries.values())

    async def put(self, entry: ActiveCondition) -> None:
        self._entries[entry.condition.key] = entry
        await self._save()

    async def remove(self, key: str) -> None:
        if self._entries.pop(key, None) is not None:
            await self._save()

    async def _save(self) -> None:
        """Encodes under the lock, so the last change made is the last one written."""
        if self._path is None:
            return
        async with self._lock:
            data = msgspec.json.encode(LedgerFile(node=self.node, active=list(self._entries.values())))
            try:
                await asyncio.to_thread(write_atomically, self._path, data, mode=FILE_MODE, parent_mode=DIR_MODE)
            except OSError as exc:
                log.error(
                    "cannot save the monitor ledger; monitoring goes on, a restart may repeat or miss events: %s",
                    exc,
                    extra={"node": self.node, "path": str(self._path)},
                )


def _read(path: Path, node: str) -> list[ActiveCondition]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    except OSError as exc:
        log.error("cannot read the monitor ledger; starting empty: %s", exc, extra={"node": node, "path": str(path)})
        return []
    try:
        ledger = msgspec.json.decode(data, type=LedgerFile)
    except msgspec.DecodeError as exc:
        aside = path.with_suffix(".unreadable")
        path.replace(aside)
        log.warning("monitor ledger unreadable; set aside, starting empty: %s", exc, extra={"node": node})
        return []
    if ledger.node != node:
        log.warning("monitor ledger is another node's; ignoring it", extra={"node": node, "ledger_node": ledger.node})
        return []
    return ledger.active
