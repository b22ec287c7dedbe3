"""List, then watch: every object of a kind handed to a callback as it changes, for as long as it runs.

The watch a controller needs, once: a list hands every object over as ``ADDED``; the watch then hands over each
change; when the watch expires or fails, a new list hands over what changed meanwhile, including as
``DELETED`` what is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from libs.kube.errors import Expired, KubeError
from libs.kube.port import KubeApi
from libs.kube.resources import Obj, Resource

log = logging.getLogger(__name__)

Apply = Callable[[str, Obj], Awaitable[None]]
RETRY_SECONDS = 2.0


def _key(obj: Obj) -> tuple[str, str]:
    meta = obj["metadata"]
    return str(meta.get("namespace", "")), str(meta["name"])


async def follow(kube: KubeApi, resource: Resource, apply: Apply, *, retry_seconds: float = RETRY_SECONDS) -> None:
    """Runs until cancelled; ``apply(type, object)`` is awaited for each change, in order."""
    known: dict[tuple[str, str], Obj] = {}
    while True:
        try:
            version = await _relist(kube, resource, apply, known)
            async with contextlib.aclosing(kube.watch(resource, resource_version=version)) as events:
                async for kind, obj in events:
                    if kind == "DELETED":
                        known.pop(_key(obj), None)
                    else:
                        known[_key(obj)] = obj
                    await apply(kind, obj)
        except Expired:
            continue
        except KubeError as exc:
            stop_if_cancelled()
            log.warning("%s watch failed; listing again: %s", resource.kind, exc)
            await asyncio.sleep(retry_seconds)


def stop_if_cancelled() -> None:
    """Re-raise a cancellation a library turned into another error: nats-py swallows a CancelledError that
    arrives while it flushes, and the failure that follows would otherwise be retried forever by a task that
    was told to stop (the request stays counted in ``Task.cancelling``)."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def _relist(kube: KubeApi, resource: Resource, apply: Apply, known: dict[tuple[str, str], Obj]) -> str:
    listed = await kube.list(resource)
    now = {_key(obj): obj for obj in listed.items}
    for key in sorted(set(known) - set(now)):
        await apply("DELETED", known.pop(key))
    for key, obj in now.items():
        if known.get(key) != obj:
            known[key] = obj
            await apply("ADDED", obj)
    return listed.resource_version
