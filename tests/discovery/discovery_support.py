"""Running discovery in the test process on a real nats-server, and watching what it publishes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import msgspec
from nats.aio.msg import Msg

from libs.bus import Bus
from libs.bus.topology import INVENTORY_BUCKET, KUBE_BUCKET, event_stream
from libs.devices.model import Inventory
from libs.events import Domain, Event, decode, event_subject, node_token
from libs.kube import RESOURCE_SLICES, KubeApi
from libs.slices import DRIVER_NAME
from libs.version import VERSION
from services.discovery.service import Discovery, running
from services.discovery.settings import Settings
from tests.support.nats_fixture import service_fields

E = TypeVar("E", bound=Event)
NODE = "node-a"


def discovery_settings(nats_url: str, tmp_path: Path, **overrides: Any) -> Settings:
    """Simulated dgx-h100 in ``tmp_path``, the standalone store, no metrics port, no periodic resync."""
    values: dict[str, Any] = {
        **service_fields(nats_url, NODE, "discovery"),
        "state_dir": str(tmp_path / "state"),
        "backend": "simulated",
        "profile": "dgx-h100",
        "kube_mode": "local",
        "metrics_port": -1,
        "resync_seconds": 3600.0,
        "retry_seconds": 0.2,
        **overrides,
    }
    return msgspec.convert(values, Settings)


@asynccontextmanager
async def discovery_process(settings: Settings) -> AsyncIterator[Discovery]:
    """What ``python -m services.discovery`` runs, minus the process: own bus connection, endpoints served."""
    bus = await Bus.connect(settings, "discovery")
    try:
        async with running(bus, settings) as discovery:
            await bus.serve(VERSION, discovery.endpoints)
            await subscriptions_sent(bus)
            yield discovery
    finally:
        await bus.close()


async def subscriptions_sent(bus: Bus) -> None:
    """Returns once the server holds every subscription made so far, so a request from another connection finds
    the endpoints. One ``flush`` is not enough with nats-py 2.16: its PING goes straight to the socket, ahead of
    SUBs still in the pending buffer; the second PING leaves after them."""
    await bus.nc.flush()
    await bus.nc.flush()


class InventoryEvents:
    """The node's inventory events, in order, as any subscriber sees them (core NATS, no consumer state).

    A callback moves each message into a queue of our own at once, so the bus can always drain at teardown,
    however many events a test leaves unread.
    """

    def __init__(self) -> None:
        self._queue: asyncio.Queue[Event] = asyncio.Queue()

    @classmethod
    async def subscribe(cls, bus: Bus, node: str = NODE) -> InventoryEvents:
        events = cls()
        await bus.nc.subscribe(event_subject(node, Domain.INVENTORY, ">"), cb=events._received)
        return events

    async def _received(self, msg: Msg) -> None:
        self._queue.put_nowait(decode(msg.headers, msg.data).data)

    async def next(self, kind: type[E], timeout: float = 10.0) -> E:
        """The next event of ``kind``, skipping events of other kinds."""
        async with asyncio.timeout(timeout):
            while True:
                event = await self._queue.get()
                if isinstance(event, kind):
                    return event

    def pending(self) -> int:
        return self._queue.qsize()


async def stored_inventory(bus: Bus, node: str = NODE) -> tuple[Inventory, dict[str, Any]]:
    """The node's KV entry, read as the kubelet shim reads it and as raw JSON (generation, reason)."""
    entry = await (await bus.kv(INVENTORY_BUCKET)).get(node_token(node))
    return msgspec.json.decode(entry.value or b"", type=Inventory), msgspec.json.decode(entry.value or b"")


async def node_slices(kube: KubeApi, node: str = NODE) -> list[dict[str, Any]]:
    return (await kube.list(RESOURCE_SLICES, fields={"spec.nodeName": node, "spec.driver": DRIVER_NAME})).items


def slice_devices(slices: list[dict[str, Any]]) -> list[str]:
    return sorted(d["name"] for s in slices for d in s["spec"].get("devices") or ())


async def bus_writes(bus: Bus) -> tuple[int, int, int]:
    """Messages ever stored in the inventory bucket, the standalone Kubernetes store and the inventory stream."""
    streams = (f"KV_{INVENTORY_BUCKET}", f"KV_{KUBE_BUCKET}", event_stream(Domain.INVENTORY))
    seqs = [(await bus.js.stream_info(stream)).state.last_seq for stream in streams]
    return seqs[0], seqs[1], seqs[2]
