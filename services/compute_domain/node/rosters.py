"""The domains' rosters as this node sees them: a KV watch on ``domains.>``, kept in memory, so a prepare waits
for its admission on an event rather than polling, and a running daemon hears of new peers at once."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from nats.js.kv import KV_DEL, KV_PURGE, KeyValue

from libs.bus.watching import stop_watching
from services.compute_domain.roster import ROSTER_PREFIX, Roster, decode_roster

log = logging.getLogger(__name__)


class Rosters:
    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv
        self.by_uid: dict[str, Roster] = {}
        self.changed = asyncio.Condition()
        self.on_change: Callable[[str, Roster | None], Awaitable[None]] | None = None
        self._watcher: KeyValue.KeyWatcher | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Returns once the current rosters are read."""
        self._watcher = await self._kv.watch(ROSTER_PREFIX + ">")
        synced = asyncio.Event()
        self._task = asyncio.create_task(self._follow(self._watcher, synced), name="compute-domain rosters")
        await synced.wait()

    async def stop(self) -> None:
        await stop_watching(self._watcher, self._task)

    async def wait_for(self, check: Callable[[], bool], timeout: float) -> None:
        """``TimeoutError`` when ``check`` is still false after ``timeout`` seconds."""
        async with asyncio.timeout(timeout), self.changed:
            await self.changed.wait_for(check)

    async def _follow(self, watcher: KeyValue.KeyWatcher, synced: asyncio.Event) -> None:
        async for entry in watcher:
            if entry is None:
                synced.set()
                continue
            uid = entry.key.removeprefix(ROSTER_PREFIX)
            roster: Roster | None = None
            if entry.operation not in (KV_DEL, KV_PURGE):
                try:
                    roster = decode_roster(entry.value or b"")
                except ValueError as exc:
                    log.warning("%s; keeping the last one", exc, extra={"domain": uid})
                    continue
            if roster is None:
                self.by_uid.pop(uid, None)
            else:
                self.by_uid[uid] = roster
            if self.on_change is not None:
                try:
                    await self.on_change(uid, roster)
                except Exception:
                    log.exception("roster change not applied", extra={"domain": uid})
            async with self.changed:
                self.changed.notify_all()
