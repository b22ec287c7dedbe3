"""Ending a KV watch: the watcher (its ordered consumer goes with it), then the tasks that read it."""

from __future__ import annotations

import asyncio
import contextlib

from nats.js.kv import KeyValue


async def stop_watching(watcher: KeyValue.KeyWatcher | None, *readers: asyncio.Task[None] | None) -> None:
    """A watcher that cannot be stopped (the connection is closing) expires on its own; a reader is cancelled
    and awaited, so nothing of the watch outlives the call."""
    if watcher is not None:
        with contextlib.suppress(Exception):
            await watcher.stop()  # type: ignore[no-untyped-call]  # nats-py is untyped here
    running = [task for task in readers if task is not None]
    for task in running:
        task.cancel()
    for task in running:
        with contextlib.suppress(asyncio.CancelledError):
            await task
