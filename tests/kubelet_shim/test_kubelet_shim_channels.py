"""The shim's second driver, ``compute-domain.gpudra.io``: its own registration and DRA sockets, its calls go to
the node's compute_domain (``PrepareChannels``), the GPU driver's still to claim_preparation, never crossing."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import pytest

from libs.bus import Bus, Endpoint
from libs.events.catalogue import ClaimPrepareResult, PreparedDevice
from libs.events.catalogue.computedomains import (
    PrepareChannels,
    PrepareChannelsReply,
    UnprepareChannels,
    UnprepareChannelsReply,
)
from libs.kubeletclient import KubeletClient
from libs.natsserver import EmbeddedNats
from services.kubelet_shim.service import serve
from tests.kubelet_shim.shim_support import (
    DRIVER,
    NODE,
    Responder,
    claim,
    claim_preparation,
    shim_settings,
    short_dir,
)
from tests.support.nats_fixture import service_common

CHANNELS = "compute-domain.gpudra.io"


@pytest.fixture
def kubelet_dir() -> Iterator[Path]:
    with short_dir() as path:
        yield path


@asynccontextmanager
async def compute_domain(nats_url: str, calls: list[PrepareChannels]) -> AsyncIterator[None]:
    """Plays the node's compute_domain: one slot per claim."""

    async def prepare(command: PrepareChannels) -> PrepareChannelsReply:
        calls.append(command)
        device = PreparedDevice(request_names=["channel"], pool=NODE, device="slot-0", cdi_device_ids=["cd=1"])
        return PrepareChannelsReply(results={c.uid: ClaimPrepareResult(devices=[device]) for c in command.claims})

    async def unprepare(command: UnprepareChannels) -> UnprepareChannelsReply:
        return UnprepareChannelsReply(results={})

    bus = await Bus.connect(service_common(nats_url, NODE, "compute_domain"), "compute_domain")
    try:
        await bus.serve("0.0.0-test", [Endpoint(PrepareChannels, prepare), Endpoint(UnprepareChannels, unprepare)])
        yield
    finally:
        await bus.close()


async def test_channel_claims_go_to_compute_domain_and_gpu_claims_to_claim_preparation(
    bus: Bus, nats_server: EmbeddedNats, kubelet_dir: Path
) -> None:
    channel_calls: list[PrepareChannels] = []
    responder = Responder()
    settings = shim_settings(nats_server.url, kubelet_dir)
    async with AsyncExitStack() as stack:
        shim = await stack.enter_async_context(serve(bus, settings))
        await stack.enter_async_context(claim_preparation(nats_server.url, responder))
        await stack.enter_async_context(compute_domain(nats_server.url, channel_calls))
        assert shim.channels is not None
        channels = await KubeletClient.register(shim.channels.registration_socket.path, driver_name=CHANNELS)
        gpus = await KubeletClient.register(shim.registration_socket.path, driver_name=DRIVER)
        stack.push_async_callback(channels.close)
        stack.push_async_callback(gpus.close)

        channel = (await channels.prepare([claim("c1")]))["c1"]
        assert channel.error == ""
        assert [d.device_name for d in channel.devices] == ["slot-0"]
        gpu = (await gpus.prepare([claim("g1")]))["g1"]
        assert [d.device_name for d in gpu.devices] == ["gpu-0"]

    assert [c.uid for call in channel_calls for c in call.claims] == ["c1"]
    assert [c.uid for call in responder.calls for c in call.claims] == ["g1"]
    assert shim.channels.registration_socket.path.name == f"{CHANNELS}-reg.sock"
    assert not shim.channels.registration_socket.path.exists()  # removed on stop, the kubelet deregisters
    assert not shim.channels.dra_socket.path.exists()


async def test_without_compute_domain_the_error_names_it_and_the_node(
    bus: Bus, nats_server: EmbeddedNats, kubelet_dir: Path
) -> None:
    async with serve(bus, shim_settings(nats_server.url, kubelet_dir, prepare_timeout=1.0)) as shim:
        assert shim.channels is not None
        client = await KubeletClient.register(shim.channels.registration_socket.path, driver_name=CHANNELS)
        try:
            error = (await client.prepare([claim("c1")]))["c1"].error
        finally:
            await client.close()
    assert f"compute_domain on node {NODE} is unreachable" in error


async def test_an_empty_driver_name_serves_no_second_driver(
    bus: Bus, nats_server: EmbeddedNats, kubelet_dir: Path
) -> None:
    async with serve(bus, shim_settings(nats_server.url, kubelet_dir, compute_domain_driver_name="")) as shim:
        assert shim.channels is None
        assert not any(CHANNELS in path.name for path in (kubelet_dir / "plugins_registry").iterdir())
