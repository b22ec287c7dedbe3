"""Shared pieces of the node-monitor tests: fast settings, a feed of the node's health events, a backend double.

The feed is a plain NATS subscription on ``gpudra.v1.<node>.health.*``: it sees every event the agent
publishes (JetStream's de-duplication happens in the stream, so a re-published id reaches it again; tests
that care about the stream read the stream). The backend double wraps the simulated backend and only adds
misbehaviour a real one may show: a counter read that hangs, an event stream that breaks.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TypeVar

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import api

from libs.bus import Bus
from libs.bus.topology import event_stream
from libs.devices import DeviceBackend
from libs.devices.events import DeviceEvent
from libs.devices.model import HealthCounters, Inventory, MigDevice, MpsSettings, TimeSliceInterval
from libs.devices.pci import PciSysfs
from libs.devices.simulated import SimulatedBackend
from libs.events import Domain, Envelope, Event, decode, event_subject
from libs.events.catalogue.health import HealthEvent, MonitorStatusChanged
from services.health.monitors import MonitorSettings
from services.health.node_agent import node_agent

NODE = "node-a"
WAIT = 5.0
"""Longest wait for one expected event; the tests take milliseconds when all is well."""

FAST = MonitorSettings(
    poll_seconds=0.05,
    deadline_seconds=0.4,
    restart_seconds=0.05,
    max_restart_seconds=0.2,
    inventory_seconds=0.5,
    startup_seconds=5.0,
)

E = TypeVar("E", bound=Event)


class HealthFeed:
    """Every health event the node publishes, in order; ``expect`` consumes up to the first match."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[Envelope[Event]] = asyncio.Queue()
        self._subscription: Subscription | None = None

    async def start(self, bus: Bus) -> None:
        subject = event_subject(NODE, Domain.HEALTH, "*")
        self._subscription = await bus.nc.subscribe(subject, cb=self._on_message)

    async def _on_message(self, msg: Msg) -> None:
        self._queue.put_nowait(decode(msg.headers, msg.data))

    async def expect(self, kind: type[E], match: Callable[[E], bool] = lambda _: True) -> Envelope[E]:
        """The next event of ``kind`` that matches; fails after WAIT seconds without one."""
        return await asyncio.wait_for(self._next(kind, match), WAIT)

    async def _next(self, kind: type[E], match: Callable[[E], bool]) -> Envelope[E]:
        while True:
            envelope = await self._queue.get()
            if isinstance(envelope.data, kind) and match(envelope.data):
                return envelope  # type: ignore[return-value]  # data is an E, checked just above

    async def stop(self) -> None:
        if self._subscription is not None:
            await self._subscription.unsubscribe()


def health(check: str, device: str, *, healthy: bool = False) -> Callable[[HealthEvent], bool]:
    """Matches a HealthEvent of ``check`` on the DRA device ``device``, a fault or (``healthy``) its clearing."""
    return lambda e: e.check == check and e.entity.device == device and e.healthy is healthy


def status_of(monitor: str, *, monitored: bool) -> Callable[[MonitorStatusChanged], bool]:
    return lambda e: e.monitor == monitor and e.monitored is monitored


async def stored_health_events(bus: Bus) -> list[Envelope[Event]]:
    """What the health stream holds for the node (after JetStream's de-duplication)."""
    subject = event_subject(NODE, Domain.HEALTH, "events")
    subscription = await bus.js.subscribe(
        subject, stream=event_stream(Domain.HEALTH), ordered_consumer=True, deliver_policy=api.DeliverPolicy.ALL
    )
    envelopes: list[Envelope[Event]] = []
    try:
        while True:
            msg = await subscription.next_msg(timeout=WAIT)
            envelopes.append(decode(msg.headers, msg.data))
            if msg.metadata.num_pending == 0:
                return envelopes
    finally:
        await subscription.unsubscribe()


@asynccontextmanager
async def running_agent(
    bus: Bus, backend: DeviceBackend, state_dir: Path, settings: MonitorSettings = FAST
) -> AsyncIterator[HealthFeed]:
    """The node agent serving its endpoints, with a feed subscribed before it starts."""
    feed = HealthFeed()
    await feed.start(bus)
    try:
        async with node_agent(bus, backend, settings, state_dir) as endpoints:
            service = await bus.serve("0.0.0-test", endpoints)
            try:
                yield feed
            finally:
                await service.stop()
    finally:
        await feed.stop()


class MisbehavingBackend:
    """The simulated backend, plus a counter read that hangs and an event stream that breaks, on demand."""

    def __init__(self, inner: SimulatedBackend) -> None:
        self.inner = inner
        self.hang_minor: int | None = None
        self.release = asyncio.Event()
        self.break_stream = False

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def node(self) -> str:
        return self.inner.node

    def pci(self) -> PciSysfs:
        return self.inner.pci()

    async def processes(self, minor: int) -> tuple[int, ...]:
        return await self.inner.processes(minor)

    async def read_counters(self, minor: int) -> HealthCounters:
        if minor == self.hang_minor:
            await self.release.wait()
        return await self.inner.read_counters(minor)

    def events(self) -> AsyncIterator[DeviceEvent]:
        return self._events(self.inner.events())

    async def _events(self, inner: AsyncIterator[DeviceEvent]) -> AsyncIterator[DeviceEvent]:
        async for event in inner:
            if self.break_stream:
                self.break_stream = False
                raise RuntimeError("NVML event set broke (test)")
            yield event

    async def inventory(self) -> Inventory:
        return await self.inner.inventory()

    async def reset_gpu(self, minor: int) -> None:
        await self.inner.reset_gpu(minor)

    async def create_mig_device(self, parent_minor: int, profile_name: str, placement_start: int) -> MigDevice:
        return await self.inner.create_mig_device(parent_minor, profile_name, placement_start)

    async def destroy_mig_device(self, device: MigDevice) -> None:
        await self.inner.destroy_mig_device(device)

    async def set_time_slice(self, minor: int, interval: TimeSliceInterval) -> None:
        await self.inner.set_time_slice(minor, interval)

    async def start_mps(self, minor: int, settings: MpsSettings) -> None:
        await self.inner.start_mps(minor, settings)

    async def stop_mps(self, minor: int) -> None:
        await self.inner.stop_mps(minor)

    async def close(self) -> None:
        await self.inner.close()
