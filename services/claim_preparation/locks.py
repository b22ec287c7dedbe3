"""Per-key async locks, taken several at once in sorted order.

The reference driver serializes every prepare on one node-wide file lock, so a slow MIG creation on one GPU
holds up claims on all the others. Here a claim locks only the GPUs it touches: claims on different GPUs run
in parallel, claims sharing a GPU take turns. Keys are always acquired in sorted order, so two claims that
want overlapping sets can never each hold what the other waits for. Locks of keys nobody holds or waits for
are dropped, so the table does not grow with every claim ever seen.

These are in-process locks: one claim_preparation runs per node, and the checkpoint (not a lock) is what
makes a crash and restart safe.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager


class _Entry:
    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


class KeyedLocks:
    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}

    def __len__(self) -> int:
        """Keys someone holds or waits for."""
        return len(self._entries)

    def locked(self, key: str) -> bool:
        """Whether someone holds or waits for ``key`` now."""
        entry = self._entries.get(key)
        return entry is not None and entry.users > 0

    @asynccontextmanager
    async def hold(self, keys: Iterable[str], on_wait: Callable[[str], None] | None = None) -> AsyncIterator[None]:
        """Hold every key in ``keys`` (duplicates allowed) until the block exits.

        ``on_wait(key)`` is called when a key is held by someone else and this call starts waiting for it:
        contention worth a log line and a metric.
        """
        ordered = sorted(set(keys))
        entries = [self._use(key) for key in ordered]
        acquired: list[_Entry] = []
        try:
            for key, entry in zip(ordered, entries, strict=True):
                if entry.lock.locked() and on_wait is not None:
                    on_wait(key)
                await entry.lock.acquire()
                acquired.append(entry)
            yield
        finally:
            for entry in reversed(acquired):
                entry.lock.release()
            for key, entry in zip(ordered, entries, strict=True):
                self._release(key, entry)

    def _use(self, key: str) -> _Entry:
        entry = self._entries.setdefault(key, _Entry())
        entry.users += 1
        return entry

    def _release(self, key: str, entry: _Entry) -> None:
        entry.users -= 1
        if entry.users == 0 and self._entries.get(key) is entry:
            del self._entries[key]
