"""``/healthz`` and ``/readyz`` of a real service process, over real HTTP, against a real nats-server.

The child (probes_child.py) runs the runtime's start-up path with a lifespan the test steers over NATS, so
every state is held until the test has seen it from outside: starting, ready, NATS lost and back, a blocked
event loop, stopping.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from libs.bus import Bus
from libs.natsserver import EmbeddedNats, free_port
from libs.runtime.probes import Probes
from tests.runtime.probes_child import BLOCK, OVERSIZE, RELEASE, STALL_SECONDS, START, WAITING

POLL_SECONDS = 0.05


@dataclass(frozen=True)
class Child:
    process: asyncio.subprocess.Process
    url: str
    """http://host:port of its metrics server."""

    async def get(self, path: str) -> tuple[int, str]:
        def fetch() -> tuple[int, str]:
            try:
                with urllib.request.urlopen(self.url + path, timeout=2) as response:
                    return int(response.status), response.read().decode()
            except urllib.error.HTTPError as exc:
                return exc.code, exc.read().decode()

        return await asyncio.to_thread(fetch)

    async def until(self, path: str, status: int, timeout: float = 15) -> str:
        """Poll ``path`` until it answers ``status``; the body it then gives."""
        deadline = time.monotonic() + timeout
        answer = await self.get(path)
        while answer[0] != status:
            if time.monotonic() > deadline:
                pytest.fail(f"{path} still answers {answer} after {timeout} s, not {status}")
            await asyncio.sleep(POLL_SECONDS)
            answer = await self.get(path)
        return answer[1]


async def _wait_for_line(process: asyncio.subprocess.Process, marker: str, timeout: float = 20) -> None:
    assert process.stdout is not None
    seen = ""
    async with asyncio.timeout(timeout):
        while marker not in seen:
            line = (await process.stdout.readline()).decode()
            if not line:
                pytest.fail(f"the child exited ({await process.wait()}) before {marker!r}:\n{seen}")
            seen += line


@pytest.fixture
async def child(nats_server: EmbeddedNats) -> AsyncIterator[Child]:
    """The child, waiting in its start-up; it must be stopped by the test (``stop``) to end cleanly."""
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.runtime.probes_child",
        nats_server.url,
        str(port),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        await _wait_for_line(process, WAITING)
        yield Child(process, f"http://127.0.0.1:{port}")
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def _start(child: Child, bus: Bus) -> None:
    await bus.nc.publish(START)
    await child.until("/readyz", 200)


async def _stop(child: Child, bus: Bus) -> None:
    """SIGTERM: not ready from the moment it is asked to stop, while the lifespan still unwinds."""
    child.process.send_signal(signal.SIGTERM)
    assert await child.until("/readyz", 503) == "stopping\n"
    await bus.nc.publish(RELEASE)
    assert await asyncio.wait_for(child.process.wait(), 15) == 0


async def test_readiness_follows_start_up_and_the_nats_connection(
    child: Child, bus: Bus, nats_server: EmbeddedNats
) -> None:
    assert await child.get("/readyz") == (503, "starting\n")
    assert await child.get("/healthz") == (200, "ok\n")
    status, metrics = await child.get("/metrics")
    assert status == 200
    assert "# TYPE" in metrics
    await _start(child, bus)

    await nats_server.stop()
    assert await child.until("/readyz", 503) == "not connected to NATS\n"
    assert await child.get("/healthz") == (200, "ok\n"), "a lost NATS connection is no reason for a restart"
    await nats_server.start()
    await child.until("/readyz", 200)

    await _stop(child, bus)


async def test_liveness_fails_while_the_event_loop_is_blocked(child: Child, bus: Bus) -> None:
    await _start(child, bus)
    blocked = STALL_SECONDS * 6
    await bus.nc.publish(BLOCK, str(blocked).encode())
    body = await child.until("/healthz", 503, timeout=blocked)
    assert body.startswith("event loop unresponsive for "), body
    assert await child.until("/healthz", 200) == "ok\n"
    await _stop(child, bus)


async def test_a_connection_the_server_closed_for_good_fails_liveness_and_ends_the_process(
    child: Child, bus: Bus
) -> None:
    """nats-py does not reconnect after some server errors; a restart is the cure, so the process asks for one."""
    await _start(child, bus)
    await bus.nc.publish(OVERSIZE)
    assert await asyncio.wait_for(child.process.wait(), 15) == 1
    assert child.process.stdout is not None
    output = (await child.process.stdout.read()).decode()
    assert "fatal: the NATS connection was closed and will not reconnect: nats: maximum payload violation" in output


def test_a_fatal_failure_fails_liveness_until_the_process_is_gone() -> None:
    probes = Probes()
    assert probes.liveness() is None
    probes.fatal("the NATS connection was closed and will not reconnect: nats: maximum payload violation")
    assert probes.liveness() == "the NATS connection was closed and will not reconnect: nats: maximum payload violation"
