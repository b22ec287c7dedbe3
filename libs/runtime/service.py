"""The life of a service process.

Settings are read and validated first (exit 2 with a message naming the flag on a bad value), then logs,
traces and metrics (with the ``/healthz`` and ``/readyz`` probes, see probes.py) are set up, the bus is
connected with the service's own credentials (streams and buckets are the bootstrap role's to create; a
missing one, or a permission the server refuses, ends the start with exit 1 or 6 and says which), the
service's own ``lifespan`` runs, and it is registered on ``nats.micro`` so ``$SRV.PING`` lists it; only then
is it ready. SIGTERM or SIGINT stops it cleanly: readiness goes first, the
lifespan unwinds, consumers stop, the connection drains, and pending spans are flushed. A ``StartupError``
ends the process with one log line and its own exit code (see startup.py).

The event loop is uvloop's: the same asyncio API, with the loop's own bookkeeping (callbacks, timers, socket
reads and writes) in C. On a prepare it takes about 5 % off the CPU of every process (docs/benchmarks.md).

``server_main`` starts a process that serves without the bus (the admission webhook, which the API server calls
over HTTPS): the same settings, logs, traces, metrics, probes and signals, no NATS connection and no ``$SRV``
registration; it is ready once its server runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import uvloop
from nats.js.errors import NotFoundError

from libs.bus import Bus, BusError, Endpoint
from libs.bus.topology import NOT_BOOTSTRAPPED
from libs.runtime.probes import LIVENESS_PATH, READINESS_PATH, STALL_SECONDS, Probes
from libs.runtime.startup import EXIT_PERMISSION, StartupError
from libs.settings import CommonSettings, ProcessSettings, SettingsError, load_settings
from libs.telemetry import configure_logging, configure_tracing, start_metrics_server
from libs.version import VERSION

log = logging.getLogger(__name__)

S = TypeVar("S", bound=CommonSettings)
P = TypeVar("P", bound=ProcessSettings)
T = TypeVar("T")
NOT_PERMITTED = (
    "the NATS credentials of this service lack a permission it needs; check that the credentials were issued for "
    "this service and node (docs/security.md)"
)
Lifespan = Callable[[Bus, S], AbstractAsyncContextManager[Sequence[Endpoint[Any]]]]
"""Sets the service up, yields its command endpoints, tears it down when the process stops."""
Server = Callable[[P], AbstractAsyncContextManager[object]]
"""Starts a process's own server (no bus), yields while it serves (what it yields is for tests), stops it."""

EXIT_SETTINGS = 2
EXIT_BUS = 1


def service_main(name: str, settings_type: type[S], lifespan: Lifespan[S], argv: Sequence[str] | None = None) -> None:
    """Console-script entry of a service: ``python -m services.<name> [--flags]``."""
    settings = _start(name, settings_type, argv)
    _run_process(_serve(name, settings, lifespan))


def server_main(name: str, settings_type: type[P], server: Server[P], argv: Sequence[str] | None = None) -> None:
    """Console-script entry of a process that serves without the bus: ``python -m services.<name> [--flags]``."""
    settings = _start(name, settings_type, argv)
    _run_process(_serve_alone(name, settings, server))


def _start(name: str, settings_type: type[P], argv: Sequence[str] | None) -> P:
    """The settings, or exit 2 naming the flag; then logs in the configured format."""
    try:
        settings = load_settings(
            settings_type,
            sys.argv[1:] if argv is None else argv,
            prog=f"python -m services.{name}",
            description=settings_type.__doc__,
        )
    except SettingsError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        sys.exit(EXIT_SETTINGS)
    configure_logging(settings.log_level, settings.log_format, service=name, node=settings.node_name)
    return settings


def _run_process(main: Coroutine[Any, Any, None]) -> None:
    try:
        uvloop.run(main)
    except BusError as exc:
        log.error("cannot start: %s", exc)
        sys.exit(EXIT_BUS)
    except Fatal as exc:
        log.error("exiting, to be started again: %s", exc)
        sys.exit(EXIT_BUS)
    except StartupError as exc:
        log.error("cannot start: %s", exc, extra={"exit_code": exc.exit_code})
        sys.exit(exc.exit_code)


@dataclass(frozen=True)
class _Process:
    probes: Probes
    stop: asyncio.Event
    """Set by SIGTERM or SIGINT."""
    metrics_port: int | None


@asynccontextmanager
async def _process(name: str, settings: ProcessSettings, stall_seconds: float) -> AsyncIterator[_Process]:
    """Traces, the metrics and probes server, the signals and the heartbeat, for the life of the block."""
    provider = configure_tracing(name, settings.node_name)
    probes = Probes(stall_seconds)
    checks = {LIVENESS_PATH: probes.liveness, READINESS_PATH: probes.readiness}
    metrics_port = start_metrics_server(settings.metrics_host, settings.metrics_port, checks)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        async with probes.heartbeat():
            yield _Process(probes, stop, metrics_port)
    finally:
        provider.shutdown()


async def _serve(name: str, settings: S, lifespan: Lifespan[S], *, stall_seconds: float = STALL_SECONDS) -> None:
    async with _process(name, settings, stall_seconds) as process:
        bus = await Bus.connect(settings, name)
        try:
            await _run(
                bus, settings, lifespan, probes=process.probes, stop=process.stop, metrics_port=process.metrics_port
            )
        except Exception as exc:
            if not bus.link.failure:
                raise
            # The unwinding ran on a dead connection and may have failed for it: the cause is the failure.
            if not isinstance(exc, Fatal):
                log.warning("teardown after a fatal failure: %r", exc)
            raise Fatal(bus.link.failure) from exc
        finally:
            await bus.close()


async def _serve_alone(name: str, settings: P, server: Server[P], *, stall_seconds: float = STALL_SECONDS) -> None:
    async with _process(name, settings, stall_seconds) as process, server(settings):
        process.probes.ready()
        log.info("service ready", extra=_identity(settings, process.metrics_port))
        await process.stop.wait()
        process.probes.stopping()
        log.info("stopping")


async def _run(
    bus: Bus, settings: S, lifespan: Lifespan[S], *, probes: Probes, stop: asyncio.Event, metrics_port: int | None
) -> None:
    async with AsyncExitStack() as stack:
        endpoints = await _unless_refused(bus, stack.enter_async_context(lifespan(bus, settings)))
        metadata = _identity(settings, metrics_port)
        await _unless_refused(bus, bus.serve(VERSION, endpoints, metadata))
        probes.ready(bus.nc)
        log.info("service ready", extra={"endpoints": [e.name for e in endpoints], **metadata})
        await _first(stop.wait(), bus.link.failed.wait())
        if bus.link.failure:
            probes.fatal(bus.link.failure)
            raise Fatal(bus.link.failure)
        probes.stopping()
        log.info("stopping")


def _identity(settings: ProcessSettings, metrics_port: int | None) -> dict[str, str]:
    """What says which process this is, in its ready line and its ``$SRV`` metadata: its pid, its metrics URL."""
    identity = {"pid": str(os.getpid())}
    if metrics_port is not None:
        identity["metrics"] = f"http://{settings.metrics_host}:{metrics_port}/metrics"
    return identity


class Fatal(Exception):
    """Only a restart cures it (probes.py says what): the process exits with ``EXIT_BUS``."""


async def _first(*waits: Awaitable[object]) -> None:
    tasks = [asyncio.ensure_future(wait) for wait in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()


async def _unless_refused(bus: Bus, starting: Awaitable[T]) -> T:
    """A start-up step, ended at once when the server refuses us something: a refused request would otherwise
    only time out, and no restart can grant a permission. A missing stream or bucket ends it too."""
    step = asyncio.ensure_future(starting)
    refused = asyncio.create_task(bus.link.refused.wait())
    try:
        await asyncio.wait({step, refused}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        refused.cancel()
    if not step.done():
        step.cancel()
        with contextlib.suppress(BaseException):
            await step
        raise StartupError(EXIT_PERMISSION, f"NATS refused {bus.link.refusals[0]}: {NOT_PERMITTED}")
    try:
        return step.result()
    except NotFoundError as exc:
        raise StartupError(EXIT_BUS, f"{exc.description}: {NOT_BOOTSTRAPPED}") from exc
