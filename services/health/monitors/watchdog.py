"""The watchdog: a monitor that crashes or stops answering makes its devices "unmonitored", never silent.

Each monitor runs as a supervised task and calls its heartbeat whenever the hardware answered it (a poll
returned, the event subscription is up). The watchdog judges each monitor from that alone:

- it crashed (raised, or returned) and has not answered since: down;
- it has a deadline and has not answered within it (a poll that hangs in NVML): down;
- it answered: up.

A crashed monitor is restarted with a growing pause; a hung one is left alone (cancelling a thread blocked in
NVML frees nothing) and is up again as soon as its poll returns. Each change of a monitor is a
``MonitorStatusChanged``; each device covered by a down monitor gets a ``monitor`` HealthEvent (code ``unmonitored``,
then the names of the monitors that are down), cleared by a healthy event only when every monitor covering it is up: a
device watched by two monitors is not monitored again because one of them came back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from libs.events.catalogue.health import EntityRef, MonitorStatusChanged
from services.health.monitors.conditions import CHECK_MONITOR, Condition, condition_key
from services.health.monitors.reporter import Reporter

log = logging.getLogger(__name__)

Heartbeat = Callable[[], None]
"""Called by a monitor each time the hardware answered it."""
MonitorRun = Callable[[Heartbeat], Awaitable[None]]
"""A monitor's body: runs until cancelled; raising or returning is a crash."""
CANCEL_RETRY_SECONDS = 0.1


@dataclass(frozen=True)
class MonitorSpec:
    name: str
    run: MonitorRun
    entities: Callable[[], tuple[EntityRef, ...]]
    """What goes unmonitored when the monitor is down (called when it goes down, so it follows the inventory)."""
    deadline: float | None
    """Longest time between two answers; None for a monitor for which silence is normal (an event stream)."""
    minor: int = -1
    """The GPU the monitor covers (-1: the node or every GPU), for the unmonitored conditions."""


@dataclass
class _Supervised:
    spec: MonitorSpec
    started_at: float
    last_beat: float | None = None
    crashed_at: float | None = None
    crash: str = ""
    reported: bool | None = None
    answered: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None


def monitor_status(
    now: float,
    *,
    started_at: float,
    last_beat: float | None,
    crashed_at: float | None,
    crash: str,
    deadline: float | None,
) -> tuple[bool | None, str]:
    """Up (True), down (False) or not known yet (None), with the reason for down."""
    if crashed_at is not None and (last_beat is None or last_beat <= crashed_at):
        return False, f"crashed: {crash}"
    if deadline is None:
        return (None, "") if last_beat is None else (True, "")
    since = started_at if last_beat is None else last_beat
    if now - since > deadline:
        return False, f"no answer for {now - since:.1f}s (deadline {deadline:g}s)"
    return (None, "") if last_beat is None else (True, "")


class Watchdog:
    def __init__(
        self,
        reporter: Reporter,
        *,
        restart_seconds: float,
        max_restart_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._reporter = reporter
        self._restart = restart_seconds
        self._max_restart = max(max_restart_seconds, restart_seconds)
        self._clock = clock
        self._monitors: dict[str, _Supervised] = {}
        self._wake = asyncio.Event()
        self._covered: dict[str, EntityRef] = {}
        """Every entity some monitor covered, so a healthy event follows even if it left the inventory."""

    def start(self, spec: MonitorSpec) -> None:
        supervised = _Supervised(spec=spec, started_at=self._clock())
        supervised.task = asyncio.create_task(self._supervise(supervised), name=f"monitor {spec.name}")
        self._monitors[spec.name] = supervised

    async def answered(self, timeout: float) -> bool:
        """Waits until every monitor started so far has answered once (or ``timeout``); True if all did."""
        waits = [asyncio.create_task(s.answered.wait()) for s in self._monitors.values()]
        if not waits:
            return True
        _, pending = await asyncio.wait(waits, timeout=timeout)
        for task in pending:
            task.cancel()
        return not pending

    async def run(self, tick: float) -> None:
        """Judges every monitor at least every ``tick`` seconds, and at once after a crash or a recovery."""
        while True:
            self._wake.clear()
            try:
                await self.evaluate()
            except Exception:
                log.exception("watchdog pass failed; trying again", extra={"node": self._reporter.node})
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(tick):  # not wait_for: on 3.11 it can swallow a cancellation
                    await self._wake.wait()

    async def evaluate(self) -> None:
        now = self._clock()
        for supervised in list(self._monitors.values()):
            spec = supervised.spec
            status, reason = monitor_status(
                now,
                started_at=supervised.started_at,
                last_beat=supervised.last_beat,
                crashed_at=supervised.crashed_at,
                crash=supervised.crash,
                deadline=spec.deadline,
            )
            if status is not None and status != supervised.reported:
                await self._announce(supervised, status, reason)
        await self._sync_unmonitored()

    async def stop(self) -> None:
        await cancel_all([s.task for s in self._monitors.values() if s.task is not None])

    async def _supervise(self, supervised: _Supervised) -> None:
        delay = self._restart
        while True:
            supervised.started_at = self._clock()
            extra = {"node": self._reporter.node, "monitor": supervised.spec.name}
            try:
                await supervised.spec.run(lambda: self._beat(supervised))
                reason = "the monitor stopped"
                log.error("monitor stopped", extra=extra)
            except Exception as exc:
                reason = f"{type(exc).__name__}: {exc}"
                log.error("monitor crashed: %s", reason, exc_info=exc, extra=extra)
            if supervised.last_beat is not None and supervised.last_beat >= supervised.started_at:
                delay = self._restart
            supervised.crashed_at, supervised.crash = self._clock(), reason
            self._wake.set()
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._max_restart)

    def _beat(self, supervised: _Supervised) -> None:
        supervised.last_beat = self._clock()
        supervised.answered.set()
        if supervised.reported is not True:
            self._wake.set()

    async def _announce(self, supervised: _Supervised, monitored: bool, reason: str) -> None:
        spec = supervised.spec
        entities = spec.entities()
        for entity in entities:
            self._covered[entity.id] = entity
        event = MonitorStatusChanged(
            node=self._reporter.node, monitor=spec.name, monitored=monitored, entities=list(entities), reason=reason
        )
        if await self._reporter.announce(event):
            supervised.reported = monitored
            extra = {"node": self._reporter.node, "monitor": spec.name, "devices": [e.device for e in entities]}
            if monitored:
                log.info("monitor answers", extra=extra)
            else:
                log.warning("monitor down; its devices are unmonitored: %s", reason, extra=extra)

    async def _sync_unmonitored(self) -> None:
        """Per entity: a fault while any covering monitor is down, healthy once all of them are up."""
        down: dict[str, list[_Supervised]] = {}
        pending: set[str] = set()
        for supervised in self._monitors.values():
            for entity in supervised.spec.entities():
                self._covered.setdefault(entity.id, entity)
                if supervised.reported is False:
                    down.setdefault(entity.id, []).append(supervised)
                elif supervised.reported is None:
                    pending.add(entity.id)
        for entity_id, entity in self._covered.items():
            if entity_id in down:
                monitors = down[entity_id]
                minor = max(s.spec.minor for s in monitors)
                await self._reporter.report(unmonitored_condition(entity, [s.spec.name for s in monitors], minor))
            elif entity_id not in pending:
                await self._reporter.clear(condition_key(CHECK_MONITOR, entity_id, "unmonitored"))


async def cancel_all(tasks: list[asyncio.Task[None]]) -> None:
    """Cancels until done: nats-py waits with ``asyncio.wait_for``, which on Python 3.11 can swallow a
    cancellation that arrives as its reply does, leaving a monitor loop running after one cancel."""
    while pending := [task for task in tasks if not task.done()]:
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=CANCEL_RETRY_SECONDS)


def unmonitored_condition(entity: EntityRef, monitors: list[str], minor: int = -1) -> Condition:
    """``entity`` is unmonitored while the named monitors are down; they are the detail, so a change of
    which monitors are down is published again."""
    names = sorted(monitors)
    return Condition(
        check=CHECK_MONITOR,
        component="monitor",
        entity=entity,
        code="unmonitored",
        minor=minor,
        error_codes=("unmonitored", *names),
        detail=",".join(names),
        message=f"{entity.device or entity.id} is unmonitored: {', '.join(names)} not answering",
    )
