"""Run each service as its own process, restart the ones that crash, stop them all on request.

Children get their own session, so a Ctrl-C at the terminal reaches only the supervisor, which then
stops the children in order instead of racing them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

import msgspec

log = logging.getLogger(__name__)

STABLE_AFTER = 60.0
"""A service that ran this long before crashing starts its backoff afresh."""


def restart_delay(restarts: int) -> float:
    """0.5 s, 1 s, 2 s ... capped at 30 s: quick recovery from a one-off crash, no hot crash loop."""
    return float(min(0.5 * 2 ** max(restarts - 1, 0), 30.0))


class ServiceSpec(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    argv: list[str]
    env: dict[str, str]
    log_file: str


CrashReport = Callable[[str, int, int, float], Awaitable[None]]
"""(service, exit code, restarts so far, seconds until the restart)."""


class Supervised:
    def __init__(self, spec: ServiceSpec) -> None:
        self.spec = spec
        self.process: asyncio.subprocess.Process | None = None
        self.restarts = 0

    @property
    def pid(self) -> int:
        return self.process.pid if self.process else 0

    async def spawn(self) -> None:
        Path(self.spec.log_file).parent.mkdir(parents=True, exist_ok=True)
        with open(self.spec.log_file, "ab") as logfile:  # noqa: ASYNC230 - once per (re)start
            self.process = await asyncio.create_subprocess_exec(
                *self.spec.argv,
                env={**os.environ, **self.spec.env},
                stdin=asyncio.subprocess.DEVNULL,
                stdout=logfile,
                stderr=logfile,
                start_new_session=True,
            )

    async def terminate(self, grace: float) -> None:
        process = self.process
        if process is None or process.returncode is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), grace)
        except TimeoutError:
            log.warning("service did not stop in time; killing it", extra={"service": self.spec.name})
            process.kill()
            await process.wait()


class Supervisor:
    def __init__(self, specs: list[ServiceSpec], on_crash: CrashReport) -> None:
        self.services = {spec.name: Supervised(spec) for spec in specs}
        self._on_crash = on_crash
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        for service in self.services.values():
            await service.spawn()
            self._tasks.append(asyncio.create_task(self._watch(service), name=f"watch {service.spec.name}"))

    def pids(self) -> Mapping[str, int]:
        return {name: service.pid for name, service in self.services.items()}

    async def _watch(self, service: Supervised) -> None:
        while True:
            assert service.process is not None
            started = time.monotonic()
            code = await service.process.wait()
            if self._stopping.is_set():
                return
            if time.monotonic() - started > STABLE_AFTER:
                service.restarts = 0
            service.restarts += 1
            delay = restart_delay(service.restarts)
            log.error(
                "service exited with %d; restarting in %.1fs (restart %d); log: %s; last line: %s",
                code,
                delay,
                service.restarts,
                service.spec.log_file,
                last_line(Path(service.spec.log_file)),
                extra={"service": service.spec.name},
            )
            with contextlib.suppress(Exception):
                await self._on_crash(service.spec.name, code, service.restarts, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
                return
            await service.spawn()

    async def stop(self, grace: float = 10.0) -> None:
        self._stopping.set()
        await asyncio.gather(*(service.terminate(grace) for service in self.services.values()))
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def last_line(path: Path, window: int = 4096) -> str:
    """The end of a crashed service's log, so the person sees why without opening it."""
    try:
        with path.open("rb") as handle:
            handle.seek(max(path.stat().st_size - window, 0))
            lines = [line for line in handle.read().decode(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1][:500] if lines else ""


def python_module(module: str) -> list[str]:
    return [sys.executable, "-m", module]
