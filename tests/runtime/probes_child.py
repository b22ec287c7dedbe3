"""Run by test_runtime_probes: a service on the runtime's real start-up path, its lifespan steered over NATS.

Start-up waits for a message on ``START``, a message on ``BLOCK`` holds the event loop for the seconds it
carries, a message on ``OVERSIZE`` makes the child send one over the server's payload limit (the server then
closes its connection for good), and the teardown waits for ``RELEASE``: each state the probes report lasts
until the test moves on.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from nats.aio.msg import Msg

from libs.bus import Bus, Endpoint
from libs.runtime.service import Fatal, _serve
from libs.settings import CommonSettings
from tests.support.nats_fixture import harness_creds

START = "probes-child.start"
BLOCK = "probes-child.block"
RELEASE = "probes-child.release"
OVERSIZE = "probes-child.oversize"
WAITING = "waiting for start"
STALL_SECONDS = 0.5


@asynccontextmanager
async def lifespan(bus: Bus, settings: CommonSettings) -> AsyncIterator[Sequence[Endpoint[Any]]]:
    start, release = asyncio.Event(), asyncio.Event()

    async def on_start(_msg: Msg) -> None:
        start.set()

    async def on_block(msg: Msg) -> None:
        time.sleep(float(msg.data))  # noqa: ASYNC251 - the fault under test: a call that holds the loop

    async def on_release(_msg: Msg) -> None:
        release.set()

    async def on_oversize(_msg: Msg) -> None:
        oversized = b"x" * (bus.nc.max_payload + 1)
        bus.nc._max_payload = len(oversized)  # past nats-py's own check, as a header-heavy message gets
        await bus.nc.publish("probes-child.big", oversized)

    await bus.nc.subscribe(START, cb=on_start)
    await bus.nc.subscribe(BLOCK, cb=on_block)
    await bus.nc.subscribe(RELEASE, cb=on_release)
    await bus.nc.subscribe(OVERSIZE, cb=on_oversize)
    await bus.nc.flush()
    print(WAITING, flush=True)
    await start.wait()
    yield []
    await release.wait()


if __name__ == "__main__":
    url, port = sys.argv[1:]
    settings = CommonSettings(nats_url=url, metrics_port=int(port), nats_creds=harness_creds(url, "probes_child"))
    try:
        asyncio.run(_serve("probes_child", settings, lifespan, stall_seconds=STALL_SECONDS))
    except Fatal as exc:
        print(f"fatal: {exc}", flush=True)
        sys.exit(1)
