"""NodeWatchResources: the complete device list from the inventory KV, health from DeviceHealthChanged events."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from contextlib import asynccontextmanager

import msgspec
import pytest

from libs.bus import Bus
from libs.bus.deadletter import header_size
from libs.bus.topology import INVENTORY_BUCKET, MAX_EVENT_BYTES
from libs.events import encode, event_subject, node_token
from libs.events.catalogue import DeviceHealthChanged
from libs.kubeletclient import DeviceHealth, HealthStatus, KubeletClient
from libs.natsserver import EmbeddedNats
from services.kubelet_shim.service import Shim, serve
from services.kubelet_shim.settings import Settings
from tests.kubelet_shim.shim_support import DRIVER, NODE, inventory, shim_settings, short_dir

Stream = AsyncGenerator[list[DeviceHealth], None]


@pytest.fixture
def settings(nats_server: EmbeddedNats) -> Iterator[Settings]:
    with short_dir() as kubelet_dir:
        yield shim_settings(nats_server.url, kubelet_dir)


@asynccontextmanager
async def health_stream(bus: Bus, settings: Settings) -> AsyncIterator[tuple[Shim, Stream]]:
    async with serve(bus, settings) as shim:
        client = await KubeletClient.register(shim.registration_socket.path, driver_name=DRIVER)
        stream = client.watch_health()
        try:
            yield shim, stream
        finally:
            await stream.aclose()
            await client.close()


async def put_inventory(bus: Bus, gpus: int) -> None:
    kv = await bus.kv(INVENTORY_BUCKET)
    await kv.put(node_token(NODE), msgspec.json.encode(inventory(gpus)))


def health_changed(device: str, health: str, reason: str = "") -> DeviceHealthChanged:
    return DeviceHealthChanged(node=NODE, pool=NODE, device=device, health=health, reason=reason)  # type: ignore[arg-type]


async def next_list(stream: Stream) -> list[DeviceHealth]:
    return await asyncio.wait_for(anext(stream), 5)


def states(devices: list[DeviceHealth]) -> dict[str, HealthStatus]:
    return {d.device_name: d.health for d in devices}


async def test_initial_list_is_the_inventory_all_healthy_then_an_update_per_change(
    bus: Bus, settings: Settings
) -> None:
    await put_inventory(bus, 3)
    async with health_stream(bus, settings) as (_, stream):
        first = await next_list(stream)
        assert states(first) == {f"gpu-{i}": HealthStatus.HEALTHY for i in range(3)}
        assert {d.pool_name for d in first} == {NODE}
        assert all(d.health_check_timeout_seconds == 30 for d in first)

        await bus.publish(health_changed("gpu-1", "Unhealthy", "XID 79: GPU has fallen off the bus"))
        second = await next_list(stream)
    assert states(second) == {
        "gpu-0": HealthStatus.HEALTHY,
        "gpu-1": HealthStatus.UNHEALTHY,
        "gpu-2": HealthStatus.HEALTHY,
    }
    unhealthy = next(d for d in second if d.device_name == "gpu-1")
    assert unhealthy.message == "XID 79: GPU has fallen off the bus"
    assert unhealthy.last_updated_time > 0


async def test_no_inventory_streams_an_empty_list_until_one_appears(bus: Bus, settings: Settings) -> None:
    async with health_stream(bus, settings) as (_, stream):
        assert await next_list(stream) == []
        await put_inventory(bus, 2)
        assert states(await next_list(stream)) == {"gpu-0": HealthStatus.HEALTHY, "gpu-1": HealthStatus.HEALTHY}


async def test_health_events_from_before_the_start_are_replayed(bus: Bus, settings: Settings) -> None:
    await put_inventory(bus, 2)
    await bus.publish(health_changed("gpu-0", "Unhealthy", "ECC double-bit error"))
    await bus.publish(health_changed("gpu-1", "Unhealthy", "thermal"))
    await bus.publish(health_changed("gpu-1", "Healthy"))
    async with health_stream(bus, settings) as (_, stream):
        first = await next_list(stream)
    assert states(first) == {"gpu-0": HealthStatus.UNHEALTHY, "gpu-1": HealthStatus.HEALTHY}


async def test_an_event_for_another_node_or_an_unknown_device_changes_nothing(bus: Bus, settings: Settings) -> None:
    await put_inventory(bus, 1)
    async with health_stream(bus, settings) as (shim, stream):
        await next_list(stream)
        version = shim.view.version
        await bus.publish(DeviceHealthChanged(node="node-b", pool="node-b", device="gpu-0", health="Unhealthy"))
        await bus.publish(health_changed("gpu-7", "Unhealthy"))
        await bus.publish(health_changed("gpu-0", "Unknown", "monitor lost"))  # a marker we can await
        latest = await next_list(stream)
        assert states(latest) == {"gpu-0": HealthStatus.UNKNOWN}
        assert shim.view.version == version + 1


async def test_the_list_is_resent_without_changes(bus: Bus, nats_server: EmbeddedNats) -> None:
    """The kubelet forgets a device's health after 30 s without a report, so the shim repeats itself."""
    await put_inventory(bus, 1)
    with short_dir() as kubelet_dir:
        settings = shim_settings(nats_server.url, kubelet_dir, health_resend_seconds=0.1)
        async with health_stream(bus, settings) as (_, stream):
            first = await next_list(stream)
            second = await next_list(stream)
    assert first == second


async def test_streams_end_when_the_shim_stops(bus: Bus, settings: Settings) -> None:
    async with serve(bus, settings) as shim:
        client = await KubeletClient.register(shim.registration_socket.path, driver_name=DRIVER)
        stream = client.watch_health()
        await next_list(stream)
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(anext(stream), 5)
    await client.close()


@pytest.mark.slow
async def test_updates_continue_after_a_nats_restart(bus: Bus, settings: Settings, nats_server: EmbeddedNats) -> None:
    await put_inventory(bus, 1)
    async with health_stream(bus, settings) as (_, stream):
        await next_list(stream)
        await nats_server.restart()
        await asyncio.wait_for(bus.nc.flush(), 10)
        await bus.publish(health_changed("gpu-0", "Unhealthy", "after restart"))
        latest = await asyncio.wait_for(_until_unhealthy(stream), 30)
    assert latest[0].message == "after restart"


async def _until_unhealthy(stream: Stream) -> list[DeviceHealth]:
    async for devices in stream:
        if devices and devices[0].health == HealthStatus.UNHEALTHY:
            return devices
    raise AssertionError("stream ended")


async def test_poison_at_the_size_limit_is_skipped_and_health_goes_on(bus: Bus, settings: Settings) -> None:
    """An undecodable event as large as a stream takes, and an inventory value as large as a bucket takes."""
    await put_inventory(bus, 1)
    async with health_stream(bus, settings) as (_, stream):
        await next_list(stream)
        headers, _ = encode(health_changed("gpu-0", "Unhealthy"), source="/gpudra/node-a/health")
        poison = b"\xff" * (MAX_EVENT_BYTES - header_size(headers) - 64)
        await bus.js.publish(event_subject(NODE, "health", "devices"), poison, headers=headers)
        await (await bus.kv(INVENTORY_BUCKET)).put(node_token(NODE), b"\xff" * (MAX_EVENT_BYTES - 4096))
        await bus.publish(health_changed("gpu-0", "Unhealthy", "after the poison"))
        latest = await next_list(stream)
    assert states(latest) == {"gpu-0": HealthStatus.UNHEALTHY}
    assert bus.nc.is_connected
