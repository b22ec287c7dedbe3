"""One lane per node: everything that changes a node's book goes through its lane, one batch at a time.

Items for one node are handled in arrival order, never two batches of one node at once, while different
nodes proceed side by side (up to ``workers`` at a time). Items that pile up while a batch is in hand become
the next batch, so under load one book write covers many events, and when idle an event is handled at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class Lanes(Generic[T]):
    def __init__(self, run: Callable[[str, list[T]], Awaitable[None]], *, workers: int, max_batch: int = 256) -> None:
        self._run = run
        self._slots = asyncio.Semaphore(workers)
        self._max_batch = max_batch
        self._queues: dict[str, list[T]] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._idle = asyncio.Event()
        self._idle.set()

    def submit(self, key: str, item: T) -> None:
        self._queues.setdefault(key, []).append(item)
        if key not in self._tasks:
            self._idle.clear()
            self._tasks[key] = asyncio.create_task(self._drain(key), name=f"lane {key}")

    async def _drain(self, key: str) -> None:
        try:
            while queue := self._queues.get(key):
                batch, self._queues[key] = queue[: self._max_batch], queue[self._max_batch :]
                async with self._slots:
                    try:
                        await self._run(key, batch)
                    except Exception:
                        log.exception("lane batch failed", extra={"node": key, "items": len(batch)})
        finally:
            if not self._queues.get(key):
                self._queues.pop(key, None)
            del self._tasks[key]
            if not self._tasks:
                self._idle.set()

    async def wait_idle(self) -> None:
        await self._idle.wait()

    async def close(self) -> None:
        """Stops every lane; items not yet handled are dropped (their messages are redelivered)."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._queues.clear()
