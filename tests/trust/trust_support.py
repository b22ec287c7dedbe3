"""Clients holding one role each, and a way to see what the server refused them (it says so asynchronously)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Iterable
from contextlib import asynccontextmanager, suppress

import nats.errors

from libs.bus import Bus
from libs.settings import CommonSettings
from libs.trust.roles import Role
from tests.support.nats_fixture import role_creds

REFUSAL_WAIT = 5.0


@asynccontextmanager
async def holding(url: str, principal: str, roles: Iterable[Role], node: str) -> AsyncIterator[Bus]:
    """A client on ``node`` with exactly ``roles``, as ``gpudra up`` (or the auth callout) would issue them."""
    settings = CommonSettings(nats_url=url, node_name=node, nats_creds=role_creds(url, principal, roles, node))
    bus = await Bus.connect(settings, principal)
    try:
        yield bus
    finally:
        await bus.close()


async def refusal(bus: Bus, action: Awaitable[object]) -> str:
    """What the server refused while ``action`` ran ("" when nothing): a refused request only times out."""
    bus.link.refused.clear()
    before = len(bus.link.refusals)
    with suppress(nats.errors.TimeoutError, TimeoutError):
        await action
    if len(bus.link.refusals) == before:
        try:
            await asyncio.wait_for(bus.link.refused.wait(), REFUSAL_WAIT)
        except TimeoutError:
            return ""
    return bus.link.refusals[-1]


async def publish(bus: Bus, subject: str, data: bytes = b"{}") -> None:
    """A plain publish, flushed, so a refusal (if any) is on its way back."""
    await bus.nc.publish(subject, data)
    await bus.nc.flush()


async def subscribe(bus: Bus, subject: str) -> None:
    await bus.nc.subscribe(subject)
    await bus.nc.flush()


async def allowed(bus: Bus, action: Awaitable[object]) -> None:
    """``action`` succeeds and the server refused nothing meanwhile."""
    before = len(bus.link.refusals)
    await action
    await bus.nc.flush()
    assert bus.link.refusals[before:] == []
