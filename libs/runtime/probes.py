"""What a service process answers on ``/healthz`` (liveness) and ``/readyz`` (readiness).

What is fatal (liveness fails, and the process exits with code 1 so its supervisor, ``gpudra up`` or the
kubelet, starts it again) is one rule, for the things only a restart cures:

- the event loop does not run: a heartbeat task stamps the time, and a stamp older than the limit means the
  loop is blocked (a synchronous call that hangs, a busy loop);
- the NATS connection is closed for good: nats-py reconnects by itself after a disconnect, a server restart
  or a network cut (not fatal: readiness fails meanwhile), but after some server errors (a message over the
  payload limit, expired or revoked credentials) it closes and never connects again;
- a consumer stopped taking events without being asked to.

The last two reach the process as ``Bus.link.fail`` (libs/bus). Readiness is "started, connected to NATS, not
stopping": what the bus-facing work of a service needs (for a process without the bus, "started, not stopping").

The answers are read from the metrics server's thread; they use only reads of single attributes that the
loop replaces whole (a float, a reference, a bool), which the GIL keeps consistent.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

from nats.aio.client import Client

from libs.runtime.background import in_background

LIVENESS_PATH = "/healthz"
READINESS_PATH = "/readyz"
STALL_SECONDS = 10.0
"""A heartbeat older than this fails liveness; far above any step the loop should take in one go."""


class Probes:
    """The state behind the two probes of one process."""

    def __init__(self, stall_seconds: float = STALL_SECONDS) -> None:
        self._stall_seconds = stall_seconds
        self._beat = time.monotonic()
        self._nc: Client | None = None
        self._started = False
        self._stopping = False
        self._fatal = ""

    @contextlib.asynccontextmanager
    async def heartbeat(self) -> AsyncIterator[None]:
        """Stamp the time while the block runs, ten times per stall limit so one late beat never fails."""

        async def beat() -> None:
            while True:
                self._beat = time.monotonic()
                await asyncio.sleep(self._stall_seconds / 10)

        async with in_background(beat(), "heartbeat"):
            yield

    def ready(self, nc: Client | None = None) -> None:
        """Start-up is done; from now on readiness follows this connection (a process without the bus has none)."""
        self._nc = nc
        self._started = True

    def stopping(self) -> None:
        self._stopping = True

    def fatal(self, reason: str) -> None:
        """Only a restart cures it (the process is about to exit)."""
        self._fatal = reason

    def liveness(self) -> str | None:
        if self._fatal:
            return self._fatal
        age = time.monotonic() - self._beat
        if age > self._stall_seconds:
            return f"event loop unresponsive for {age:.1f} s (limit {self._stall_seconds:g} s)"
        return None

    def readiness(self) -> str | None:
        nc = self._nc
        if self._stopping:
            return "stopping"
        if not self._started:
            return "starting"
        if nc is not None and not nc.is_connected:
            return "not connected to NATS"
        return None
