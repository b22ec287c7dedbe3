"""Who is running: every gpudra service answers ``$SRV.PING`` and ``$SRV.INFO`` (``nats.micro``)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg


class ServiceInfo(msgspec.Struct, frozen=True, kw_only=True):
    """The fields of a ``$SRV.INFO`` answer an operator looks at."""

    name: str
    id: str
    version: str
    metadata: dict[str, str] = msgspec.field(default_factory=dict)
    endpoints: list[dict[str, Any]] = msgspec.field(default_factory=list)

    @property
    def node(self) -> str:
        return self.metadata.get("node", "")


async def list_services(nc: Client, name: str = "", *, quiet: float = 0.25, limit: float = 2.0) -> list[ServiceInfo]:
    """Ask every service (or those called ``name``) and collect answers until none came for ``quiet`` s."""
    inbox = nc.new_inbox()
    answers: asyncio.Queue[Msg] = asyncio.Queue()

    async def collect(msg: Msg) -> None:
        await answers.put(msg)

    subscription = await nc.subscribe(inbox, cb=collect)
    found: dict[str, ServiceInfo] = {}
    try:
        await nc.publish(f"$SRV.INFO.{name}" if name else "$SRV.INFO", b"", reply=inbox)
        await nc.flush()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(limit):
                while True:
                    msg = await asyncio.wait_for(answers.get(), quiet)
                    if not msg.data:  # a "no responders" status: nobody is running
                        break
                    info = msgspec.json.decode(msg.data, type=ServiceInfo)
                    found[info.id] = info
    finally:
        await subscription.unsubscribe()
    return sorted(found.values(), key=lambda info: (info.node, info.name))
