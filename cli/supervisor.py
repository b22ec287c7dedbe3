"""Run each service as its own process, and the embedded nats-server, restart the ones that crash, stop them
all on request.

Children get their own session, so a Ctrl-C at the terminal reaches only the supervisor, which then
stops the children in order instead of racing them. A crash is reported as ``ServiceCrashed``: a service's at
once (the bus is up), the nats-server's once it is back (there is no bus before).
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
from typing import Protocol

import msgspec

from libs.lifetime import bound_to_parent
from libs.natsserver import EmbeddedNats

log = logging.getLogger(__name__)

STABLE_AFTER = 5.0
"""A service that ran this long before crashing starts its backoff afresh. A crash loop (a bad setting, a
missing file) dies within the second or two a start takes and still backs off to the cap; a process killed
after it was serving (the OOM killer, the chaos soak) is back at once. The soak's long form measured the
outage this costs: with 60 s here, services killed every 6-18 s reached the 30-s cap."""


def restart_delay(restarts: int, cap: float = 30.0) -> float:
    """0.5 s, 1 s, 2 s ... capped at ``cap``: quick recovery from a one-off crash, no hot crash loop."""
    return float(min(0.5 * 2 ** max(restarts - 1, 0), cap))


class ServiceSpec(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    argv: list[str]
    env: dict[str, str]
    log_file: str


CrashReport = Callable[[str, int, int, float], Awaitable[None]]
"""(service, exit code, restarts so far, seconds until the restart)."""


class Child(Protocol):
    """Something the supervisor starts, watches and stops."""

    name: str
    log_file: str
    restarts: int
    reports_after_restart: bool
    """Its crash can only be told once it runs again (the nats-server: the bus needs it)."""
    longest_delay: float
    """The restart back-off's cap."""

    @property
    def pid(self) -> int: ...

    async def spawn(self) -> None: ...

    async def wait(self) -> int: ...

    async def terminate(self, grace: float) -> None: ...


class Supervised:
    """A service process."""

    reports_after_restart = False
    longest_delay = 30.0

    def __init__(self, spec: ServiceSpec) -> None:
        self.spec = spec
        self.name = spec.name
        self.log_file = spec.log_file
        self.process: asyncio.subprocess.Process | None = None
        self.restarts = 0

    @property
    def pid(self) -> int:
        return self.process.pid if self.process else 0

    async def wait(self) -> int:
        assert self.process is not None
        return await self.process.wait()

    async def spawn(self) -> None:
        Path(self.spec.log_file).parent.mkdir(parents=True, exist_ok=True)
        with open(self.spec.log_file, "ab") as logfile:  # noqa: ASYNC230 - once per (re)start
            self.process = await asyncio.create_subprocess_exec(
                *bound_to_parent(self.spec.argv),
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


class SupervisedNats:
    """The embedded nats-server: restarted on the same store and port, so clients reconnect where they were."""

    name = "nats-server"
    reports_after_restart = True
    longest_delay = 2.0
    """Every service waits on it, and a start that fails costs little: the system is back within seconds of
    its last kill, however many came before."""

    def __init__(self, server: EmbeddedNats) -> None:
        self.server = server
        self.log_file = str(server.store_dir / "nats-server.log")
        self.restarts = 0

    @property
    def pid(self) -> int:
        return self.server.pid or 0

    async def spawn(self) -> None:
        await self.server.start()

    async def wait(self) -> int:
        return await self.server.wait()

    async def terminate(self, grace: float) -> None:
        await self.server.stop()


class Supervisor:
    """Starts the children in order and keeps them running; ``on_started`` hears of every (re)start."""

    def __init__(
        self, children: list[Child], on_crash: CrashReport, on_started: Callable[[], None] = lambda: None
    ) -> None:
        self.children = {child.name: child for child in children}
        self._on_crash = on_crash
        self._on_started = on_started
        self._stopping = asyncio.Event()
        self._started: set[str] = set()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self, *names: str) -> None:
        """Start these children (all not started yet when none are named), in order, and watch them."""
        for name in names or [name for name in self.children if name not in self._started]:
            child = self.children[name]
            await child.spawn()
            self._started.add(name)
            self._tasks.append(asyncio.create_task(self._watch(child), name=f"watch {child.name}"))

    def pids(self) -> Mapping[str, int]:
        return {name: child.pid for name, child in self.children.items()}

    async def _watch(self, child: Child) -> None:
        while True:
            started = time.monotonic()
            code = await child.wait()
            if self._stopping.is_set():
                return
            if time.monotonic() - started > STABLE_AFTER:
                child.restarts = 0
            child.restarts += 1
            delay = restart_delay(child.restarts, child.longest_delay)
            log.error(
                "%s exited with %d; restarting in %.1fs (restart %d); log: %s; last line: %s",
                child.name,
                code,
                delay,
                child.restarts,
                child.log_file,
                last_line(Path(child.log_file)),
                extra={"service": child.name},
            )
            if not child.reports_after_restart:
                await self._report(child, code, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
                return
            if not await self._respawn(child):
                continue
            self._on_started()
            if child.reports_after_restart:
                await self._report(child, code, delay)

    async def _respawn(self, child: Child) -> bool:
        try:
            await child.spawn()
        except Exception as exc:  # a child that cannot start is a crash too: back off and try again
            log.error("%s did not start again: %s", child.name, exc, extra={"service": child.name})
            return False
        return True

    async def _report(self, child: Child, code: int, delay: float) -> None:
        with contextlib.suppress(Exception):
            await self._on_crash(child.name, code, child.restarts, delay)

    async def stop(self, *names: str, grace: float = 10.0) -> None:
        """Stop these children at once (all that are left when none are named); none is restarted after."""
        self._stopping.set()
        stopping = names or list(self._started)
        await asyncio.gather(*(self.children[name].terminate(grace) for name in stopping))
        self._started -= set(stopping)
        if not self._started:
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
