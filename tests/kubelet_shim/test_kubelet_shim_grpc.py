"""kubelet_shim in-process, driven like a kubelet over real unix sockets, against the real bus.

claim_preparation is played by ``Responder``, a real ``nats.micro`` service on its own connection.
"""

from __future__ import annotations

import asyncio
import os
import socket
import stat
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import grpc.aio
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from libs.bus import Bus, CommandError
from libs.kubeletclient import DRA_V1, DRA_V1BETA1, HEALTH_V1ALPHA1, KubeletClient, PreparedDevice, get_plugin_info
from libs.natsserver import EmbeddedNats
from libs.telemetry import tracer
from services.kubelet_shim.dra import V1_SERVICE
from services.kubelet_shim.service import Shim, serve
from services.kubelet_shim.sockets import SocketError, is_live
from tests.kubelet_shim.shim_support import (
    DRIVER,
    NODE,
    Responder,
    claim,
    claim_preparation,
    shim_settings,
    short_dir,
)

StartShim = Callable[..., Awaitable[Shim]]


@pytest.fixture
def kubelet_dir() -> Iterator[Path]:
    with short_dir() as path:
        yield path


@pytest.fixture
async def start_shim(bus: Bus, nats_server: EmbeddedNats, kubelet_dir: Path) -> AsyncIterator[StartShim]:
    """Starts shims (settings overridable) on the test's bus; stops them at the end of the test."""
    async with AsyncExitStack() as stack:

        async def start(**overrides: object) -> Shim:
            settings = shim_settings(nats_server.url, kubelet_dir, **overrides)
            return await stack.enter_async_context(serve(bus, settings))

        yield start


@pytest.fixture
async def responder(nats_server: EmbeddedNats) -> AsyncIterator[Responder]:
    async with claim_preparation(nats_server.url, Responder()) as running:
        yield running


async def register(shim: Shim, force_version: str | None = None, call_timeout: float = 45.0) -> KubeletClient:
    return await KubeletClient.register(
        shim.registration_socket.path, driver_name=DRIVER, force_version=force_version, call_timeout=call_timeout
    )


# -- registration --------------------------------------------------------------------------------------


async def test_registration_advertises_v1_then_v1beta1_then_health(start_shim: StartShim) -> None:
    shim = await start_shim()
    info = await get_plugin_info(shim.registration_socket.path)
    assert info.type == "DRAPlugin"
    assert info.name == DRIVER
    assert info.endpoint == str(shim.dra_socket.path)
    assert info.supported_versions == (DRA_V1, DRA_V1BETA1, HEALTH_V1ALPHA1)
    assert shim.registration_socket.path.name == f"{DRIVER}-reg.sock"
    assert shim.dra_socket.path.parent.name == DRIVER

    client = await register(shim)
    await client.close()
    assert client.version == DRA_V1
    await asyncio.wait_for(shim.registration.notified.wait(), 2)
    assert shim.registration.last_status is not None
    assert shim.registration.last_status.plugin_registered


async def test_rolling_update_socket_names_carry_the_pod_uid(start_shim: StartShim) -> None:
    shim = await start_shim(pod_uid="0f1e2d3c-aaaa-bbbb")
    assert shim.registration_socket.path.name == f"{DRIVER}-0f1e2d3c-aaaa-bbbb-reg.sock"
    assert shim.dra_socket.path.name == "dra-0f1e2d3c-aaaa-bbbb.sock"
    info = await get_plugin_info(shim.registration_socket.path)
    assert info.endpoint == str(shim.dra_socket.path)


# -- prepare / unprepare -------------------------------------------------------------------------------


async def test_v1_prepare_and_unprepare_are_one_request_each(start_shim: StartShim, responder: Responder) -> None:
    shim = await start_shim()
    async with await register(shim) as client:
        prepared = await client.prepare([claim("u1"), claim("u2")])
        assert set(prepared) == {"u1", "u2"}
        assert prepared["u1"].ok
        assert prepared["u1"].devices == (
            PreparedDevice(
                request_names=("gpu",),
                pool_name=NODE,
                device_name="gpu-0",
                cdi_device_ids=(f"k8s.{DRIVER}/claim=u1-gpu-0",),
                share_id="share-u1",
            ),
        )
        unprepared = await client.unprepare([claim("u1"), claim("u2")])
    assert all(result.ok for result in unprepared.values())
    assert [type(call).__name__ for call in responder.calls] == ["PrepareClaims", "UnprepareClaims"]
    assert [c.uid for c in responder.calls[0].claims] == ["u1", "u2"]
    assert responder.calls[0].claims[0].name == "claim-u1"


async def test_v1beta1_prepare_and_unprepare(start_shim: StartShim, responder: Responder) -> None:
    shim = await start_shim()
    async with await register(shim, force_version="v1beta1") as client:
        assert client.version == DRA_V1BETA1
        prepared = await client.prepare([claim("u1")])
        unprepared = await client.unprepare([claim("u1")])
    device = prepared["u1"].devices[0]
    assert device.cdi_device_ids == (f"k8s.{DRIVER}/claim=u1-gpu-0",)
    assert device.share_id is None  # v1beta1 has no share_id field
    assert unprepared["u1"].ok
    assert len(responder.calls) == 2


async def test_per_claim_errors_pass_through_and_missing_uids_are_filled(
    start_shim: StartShim, responder: Responder
) -> None:
    responder.errors["bad"] = "device gpu-3 is already prepared for claim default/eval-1"
    responder.leave_out.add("lost")
    responder.extra_uid = "stranger"
    shim = await start_shim()
    async with await register(shim) as client:  # the client itself rejects unknown or missing UIDs
        prepared = await client.prepare([claim("good"), claim("bad"), claim("lost")])
        unprepared = await client.unprepare([claim("good"), claim("bad"), claim("lost")])
    assert prepared["good"].ok
    assert prepared["bad"].error == "device gpu-3 is already prepared for claim default/eval-1"
    assert prepared["bad"].devices == ()
    assert "default/claim-lost (uid 'lost')" in prepared["lost"].error
    assert f"claim_preparation on node {NODE} sent no result" in prepared["lost"].error
    assert unprepared["bad"].error.startswith("device gpu-3")
    assert "sent no result" in unprepared["lost"].error


async def test_claim_preparation_not_running_is_a_quick_per_claim_error(start_shim: StartShim) -> None:
    shim = await start_shim()
    async with await register(shim) as client:
        started = time.monotonic()
        prepared = await client.prepare([claim("u1"), claim("u2")])
        unprepared = await client.unprepare([claim("u1")])
    assert time.monotonic() - started < 2.0
    for result in (prepared["u1"], prepared["u2"], unprepared["u1"]):
        assert f"claim_preparation on node {NODE} is unreachable" in result.error
    assert "default/claim-u2 (uid 'u2')" in prepared["u2"].error


async def test_claim_preparation_timeout_is_a_per_claim_error(start_shim: StartShim, responder: Responder) -> None:
    responder.hang = True
    shim = await start_shim(prepare_timeout=0.3)
    async with await register(shim) as client:
        prepared = await client.prepare([claim("u1")])
    assert f"claim_preparation on node {NODE} timed out after 0.3s" in prepared["u1"].error


async def test_answer_arrives_within_a_short_kubelet_deadline(start_shim: StartShim, responder: Responder) -> None:
    """With 40 s configured but a 2 s deadline from the caller, the shim answers inside the deadline."""
    responder.hang = True
    shim = await start_shim()
    async with await register(shim, call_timeout=1.5) as client:
        prepared = await client.prepare([claim("u1")])
    assert "timed out" in prepared["u1"].error


async def test_claim_preparation_failure_is_a_per_claim_error(start_shim: StartShim, responder: Responder) -> None:
    responder.fail = CommandError(500, "checkpoint directory is read-only")
    shim = await start_shim()
    async with await register(shim) as client:
        prepared = await client.prepare([claim("u1")])
    assert "claim_preparation on node node-a failed: checkpoint directory is read-only (code 500)" in (
        prepared["u1"].error
    )


async def test_bad_uids_get_their_own_errors_and_good_claims_go_through(
    start_shim: StartShim, responder: Responder
) -> None:
    shim = await start_shim()
    claims = [
        claim("good"),
        claim("", name="empty"),
        claim("../../etc", name="escape"),
        claim("a/b", name="slash"),
        claim("dup", name="first"),
        claim("dup", name="second"),
        claim("twice"),
        claim("twice"),
    ]
    async with await register(shim) as client:
        prepared = await client.prepare(claims)
        again = await client.prepare([claim("after")])
    assert prepared["good"].ok
    assert prepared["twice"].ok
    assert prepared[""].error == "claim default/empty (uid ''): the claim UID is empty"
    assert "'/' or '..'" in prepared["../../etc"].error
    assert "'/' or '..'" in prepared["a/b"].error
    assert "default/first, default/second" in prepared["dup"].error
    assert [c.uid for c in responder.calls[0].claims] == ["good", "twice"]
    assert again["after"].ok


async def test_thousands_of_claims_are_refused_per_claim_and_the_shim_keeps_serving(
    start_shim: StartShim, responder: Responder
) -> None:
    shim = await start_shim()
    claims = [claim(f"uid-{i}") for i in range(5000)]
    async with await register(shim) as client:
        prepared = await client.prepare(claims)
        after = await client.prepare([claim("small")])
    assert len(prepared) == 5000
    assert "holds 5000 claims, more than the 128" in prepared["uid-4999"].error
    assert after["small"].ok
    assert len(responder.calls) == 1  # only the small call reached claim_preparation


async def test_one_trace_covers_kubelet_shim_and_claim_preparation(
    start_shim: StartShim, responder: Responder, spans: InMemorySpanExporter
) -> None:
    shim = await start_shim()
    async with await register(shim) as client:
        with tracer().start_as_current_span("kubelet NodePrepareResources") as kubelet:
            await client.prepare([claim("u1")])
    context = kubelet.get_span_context()
    finished = spans.get_finished_spans()
    shim_span = next(s for s in finished if s.name == f"{V1_SERVICE}/NodePrepareResources")
    served = next(s for s in finished if s.name == f"process gpudra.v1.{NODE}.rpc.claims.prepare")
    assert shim_span.kind == SpanKind.SERVER
    assert shim_span.parent is not None
    assert shim_span.parent.span_id == context.span_id  # extracted from the gRPC metadata
    assert shim_span.context is not None
    assert served.context is not None
    assert served.context.trace_id == context.trace_id == shim_span.context.trace_id
    assert shim_span.attributes is not None
    assert shim_span.attributes["gpudra.claims.count"] == 1


# -- sockets -------------------------------------------------------------------------------------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_sockets_are_owner_only(start_shim: StartShim) -> None:
    shim = await start_shim()
    assert _mode(shim.registration_socket.path) == 0o600
    assert _mode(shim.dra_socket.path) == 0o600


@pytest.mark.parametrize("registration_dir", ["", "r" * 100], ids=["short", "deep"])
async def test_sockets_are_removed_on_shutdown(
    bus: Bus, nats_server: EmbeddedNats, kubelet_dir: Path, registration_dir: str
) -> None:
    deep = str(kubelet_dir / registration_dir) if registration_dir else ""
    settings = shim_settings(nats_server.url, kubelet_dir, registration_dir=deep)
    async with serve(bus, settings) as shim:
        assert shim.registration_socket.path.exists()
        assert shim.dra_socket.path.exists()
    assert not settings.registration_socket.exists()
    assert not settings.dra_socket.exists()


def _stale_socket(path: Path) -> None:
    """What a killed process leaves: a socket file nobody listens on."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(path))


async def test_stale_sockets_from_a_killed_process_are_replaced(
    start_shim: StartShim, nats_server: EmbeddedNats, kubelet_dir: Path
) -> None:
    settings = shim_settings(nats_server.url, kubelet_dir)
    _stale_socket(settings.registration_socket)
    _stale_socket(settings.dra_socket)
    assert not is_live(settings.registration_socket)
    shim = await start_shim()
    assert is_live(shim.registration_socket.path)
    assert is_live(shim.dra_socket.path)
    assert (await get_plugin_info(shim.registration_socket.path)).name == DRIVER


async def test_a_live_socket_of_another_process_is_not_taken(
    start_shim: StartShim, nats_server: EmbeddedNats, kubelet_dir: Path
) -> None:
    settings = shim_settings(nats_server.url, kubelet_dir)
    settings.registration_socket.parent.mkdir(parents=True)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as other:
        other.bind(str(settings.registration_socket))
        other.listen()
        with pytest.raises(SocketError, match="served by another running process"):
            await start_shim()
        assert settings.registration_socket.exists()
    assert not settings.dra_socket.exists()  # what had been started was torn down again


async def test_a_file_that_is_not_a_socket_is_never_deleted(
    start_shim: StartShim, nats_server: EmbeddedNats, kubelet_dir: Path
) -> None:
    settings = shim_settings(nats_server.url, kubelet_dir)
    settings.dra_socket.parent.mkdir(parents=True)
    settings.dra_socket.write_text("keep me")
    with pytest.raises(SocketError, match="is not a socket"):
        await start_shim()
    assert settings.dra_socket.read_text() == "keep me"


async def test_a_dra_socket_path_too_long_to_dial_is_a_clear_error(start_shim: StartShim) -> None:
    with pytest.raises(SocketError, match="the kubelet dials it"):
        await start_shim(plugin_dir="/tmp/" + "d" * 110)


async def test_a_deep_registration_dir_is_bound_through_the_directory(start_shim: StartShim, kubelet_dir: Path) -> None:
    """Standalone state dirs can be deep; the registration socket is found by listing, not dialled by path."""
    deep = kubelet_dir / ("r" * 100)
    shim = await start_shim(registration_dir=str(deep))
    path = shim.registration_socket.path
    assert len(str(path)) > 107
    assert _mode(path) == 0o600
    fd = os.open(deep, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert (await get_plugin_info(f"/proc/self/fd/{fd}/{path.name}")).name == DRIVER
    finally:
        os.close(fd)


# -- grpc health probe ---------------------------------------------------------------------------------


async def _probe(target: str) -> int:
    async with grpc.aio.insecure_channel(target) as channel:
        stub: Any = health_pb2_grpc.HealthStub(channel)  # the stubs package leaves the methods out
        answer: health_pb2.HealthCheckResponse = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
    return answer.status


async def test_grpc_health_serves_while_the_sockets_are_in_place(start_shim: StartShim) -> None:
    shim = await start_shim(grpc_health_port=0)
    assert shim.probe_port
    tcp = f"127.0.0.1:{shim.probe_port}"
    assert await _probe(tcp) == health_pb2.HealthCheckResponse.SERVING
    assert await _probe(f"unix://{shim.dra_socket.path}") == health_pb2.HealthCheckResponse.SERVING
    os.unlink(shim.registration_socket.path)  # the kubelet directory was wiped under us
    assert await _probe(tcp) == health_pb2.HealthCheckResponse.NOT_SERVING
