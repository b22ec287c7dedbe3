"""Waiting on what the system does rather than sleeping: a process's exit, an event type's arrivals."""

from __future__ import annotations

import asyncio
import os
from typing import TypeVar

from nats.aio.msg import Msg

from libs.bus import Bus
from libs.events import decode
from libs.events.base import Event

E = TypeVar("E", bound=Event)


async def exited(pid: int) -> None:
    """Until ``pid`` (any process, not only a child) has exited: its pidfd becomes readable then; a zombie has
    exited."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_reader(fd, done.set)
    try:
        await done.wait()
    finally:
        loop.remove_reader(fd)
        os.close(fd)


async def events_of(bus: Bus, kind: type[E], node: str = "*") -> asyncio.Queue[E]:
    """Every ``kind`` event published for ``node`` (a token; ``*``: all nodes) from now on, as they come."""
    found: asyncio.Queue[E] = asyncio.Queue()

    async def put(msg: Msg) -> None:
        event = decode(msg.headers, msg.data).data
        assert isinstance(event, kind)
        found.put_nowait(event)

    await bus.nc.subscribe(f"gpudra.v1.{node}.{kind.domain}.{kind.topic}", cb=put)
    await bus.nc.flush()
    return found
