"""The kubelet-like client against a small in-test DRA plugin on real unix sockets.

The plugin implements the generated servicers (registration on one socket; DRA v1, v1beta1 and the
health stream on the DRA socket, each only when asked to), records what it was sent, and can be
told to misbehave the ways the kubelet guards against.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import grpc
import grpc.aio
import pytest
from opentelemetry.sdk.trace import TracerProvider

from libs.kubeletclient import (
    DRA_V1,
    DRA_V1BETA1,
    HEALTH_V1ALPHA1,
    ClaimMismatchError,
    ClaimRef,
    DeviceHealth,
    HealthStatus,
    KubeletClient,
    KubeletClientError,
    PluginCallError,
    PreparedDevice,
    RegistrationError,
    find_registration_socket,
    select_version,
)
from protos.gen import (
    dra_v1_pb2,
    dra_v1_pb2_grpc,
    dra_v1beta1_pb2,
    dra_v1beta1_pb2_grpc,
    health_v1alpha1_pb2,
    health_v1alpha1_pb2_grpc,
    pluginregistration_pb2,
    pluginregistration_pb2_grpc,
)

DRIVER = "gpu.test"
# sockaddr_un.sun_path holds 107 bytes; pytest's tmp_path can come close with long test names.
MAX_SOCKET_DIR = 60

ClaimTuple = tuple[str, str, str]
Metadata = dict[str, str]


@dataclass
class PluginConfig:
    """What the fake plugin advertises and how it answers."""

    name: str = DRIVER
    type: str = "DRAPlugin"
    versions: list[str] = field(default_factory=lambda: [DRA_V1, DRA_V1BETA1, HEALTH_V1ALPHA1])
    serve: set[str] = field(default_factory=lambda: {DRA_V1, DRA_V1BETA1, HEALTH_V1ALPHA1})
    # None: advertise the DRA socket; "" : leave endpoint empty (kubelet then uses the reg socket).
    endpoint: str | None = None
    leave_out: set[str] = field(default_factory=set)  # claim UIDs missing from the answer
    extra_uid: str | None = None  # a UID nobody asked for
    claim_errors: dict[str, str] = field(default_factory=dict)  # per-claim error strings
    abort: grpc.StatusCode | None = None  # fail the whole call
    hang: bool = False  # never answer (deadline test)


@dataclass
class Call:
    version: str
    method: str
    claims: list[ClaimTuple]
    metadata: Metadata


class FakePlugin:
    """A DRA plugin: registration server + DRA server, recording what the 'kubelet' sent."""

    def __init__(self, directory: Path, config: PluginConfig) -> None:
        self.config = config
        self.registry = directory / "registry"
        self.registry.mkdir(exist_ok=True)
        self.reg_socket = self.registry / f"{config.name}-reg.sock"
        self.dra_socket = directory / "dra.sock"
        self.calls: list[Call] = []
        self.registrations: asyncio.Queue[pluginregistration_pb2.RegistrationStatus] = asyncio.Queue()
        self.health: asyncio.Queue[health_v1alpha1_pb2.NodeWatchResourcesResponse] = asyncio.Queue()
        self.health_watchers = 0
        self.health_ended = asyncio.Event()
        self.never = asyncio.Event()
        self._servers: list[grpc.aio.Server] = []

    async def start(self) -> None:
        reg = grpc.aio.server()
        pluginregistration_pb2_grpc.add_RegistrationServicer_to_server(_Registration(self), reg)
        dra = reg if self.config.endpoint == "" else grpc.aio.server()
        if DRA_V1 in self.config.serve:
            dra_v1_pb2_grpc.add_DRAPluginServicer_to_server(_DRAv1(self), dra)
        if DRA_V1BETA1 in self.config.serve:
            dra_v1beta1_pb2_grpc.add_DRAPluginServicer_to_server(_DRAv1beta1(self), dra)
        if HEALTH_V1ALPHA1 in self.config.serve:
            health_v1alpha1_pb2_grpc.add_DRAResourceHealthServicer_to_server(_Health(self), dra)
        reg.add_insecure_port(f"unix://{self.reg_socket}")
        self._servers.append(reg)
        if dra is not reg:
            dra.add_insecure_port(f"unix://{self.dra_socket}")
            self._servers.append(dra)
        for server in self._servers:
            await server.start()

    async def stop(self) -> None:
        for server in self._servers:
            await server.stop(grace=None)

    def info(self) -> pluginregistration_pb2.PluginInfo:
        endpoint = str(self.dra_socket) if self.config.endpoint is None else self.config.endpoint
        return pluginregistration_pb2.PluginInfo(
            type=self.config.type,
            name=self.config.name,
            endpoint=endpoint,
            supported_versions=self.config.versions,
        )

    async def answer(
        self,
        version: str,
        method: str,
        claims: list[ClaimTuple],
        context: grpc.aio.ServicerContext[object, object],
    ) -> dict[str, str]:
        """Record the call and return claim UID -> error ("" for success) per the config."""
        metadata = {k: v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}
        self.calls.append(Call(version, method, claims, metadata))
        if self.config.hang:
            await self.never.wait()
        if self.config.abort is not None:
            await context.abort(self.config.abort, "plugin exploded")
        answer = {uid: self.config.claim_errors.get(uid, "") for _, _, uid in claims}
        for uid in self.config.leave_out:
            answer.pop(uid, None)
        if self.config.extra_uid:
            answer[self.config.extra_uid] = ""
        return answer


def _claims(request_claims: Iterable[dra_v1_pb2.Claim | dra_v1beta1_pb2.Claim]) -> list[ClaimTuple]:
    return [(c.namespace, c.name, c.uid) for c in request_claims]


class _Registration(pluginregistration_pb2_grpc.RegistrationServicer):
    def __init__(self, plugin: FakePlugin) -> None:
        self.plugin = plugin

    async def GetInfo(
        self, request: pluginregistration_pb2.InfoRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> pluginregistration_pb2.PluginInfo:
        return self.plugin.info()

    async def NotifyRegistrationStatus(
        self,
        request: pluginregistration_pb2.RegistrationStatus,
        context: grpc.aio.ServicerContext[object, object],
    ) -> pluginregistration_pb2.RegistrationStatusResponse:
        self.plugin.registrations.put_nowait(request)
        return pluginregistration_pb2.RegistrationStatusResponse()


def _v1_device(uid: str, index: int) -> dra_v1_pb2.Device:
    device = dra_v1_pb2.Device(
        request_names=["gpu"],
        pool_name="node-a",
        device_name=f"gpu-{index}",
        cdi_device_ids=[f"k8s.gpu.test/gpu={uid}-{index}"],
    )
    if index == 0:
        device.share_id = f"share-{uid}"
    return device


class _DRAv1(dra_v1_pb2_grpc.DRAPluginServicer):
    def __init__(self, plugin: FakePlugin) -> None:
        self.plugin = plugin

    async def NodePrepareResources(
        self,
        request: dra_v1_pb2.NodePrepareResourcesRequest,
        context: grpc.aio.ServicerContext[object, object],
    ) -> dra_v1_pb2.NodePrepareResourcesResponse:
        answer = await self.plugin.answer("v1", "prepare", _claims(request.claims), context)
        return dra_v1_pb2.NodePrepareResourcesResponse(
            claims={
                uid: dra_v1_pb2.NodePrepareResourceResponse(error=err)
                if err
                else dra_v1_pb2.NodePrepareResourceResponse(devices=[_v1_device(uid, 0), _v1_device(uid, 1)])
                for uid, err in answer.items()
            }
        )

    async def NodeUnprepareResources(
        self,
        request: dra_v1_pb2.NodeUnprepareResourcesRequest,
        context: grpc.aio.ServicerContext[object, object],
    ) -> dra_v1_pb2.NodeUnprepareResourcesResponse:
        answer = await self.plugin.answer("v1", "unprepare", _claims(request.claims), context)
        return dra_v1_pb2.NodeUnprepareResourcesResponse(
            claims={uid: dra_v1_pb2.NodeUnprepareResourceResponse(error=err) for uid, err in answer.items()}
        )


class _DRAv1beta1(dra_v1beta1_pb2_grpc.DRAPluginServicer):
    def __init__(self, plugin: FakePlugin) -> None:
        self.plugin = plugin

    async def NodePrepareResources(
        self,
        request: dra_v1beta1_pb2.NodePrepareResourcesRequest,
        context: grpc.aio.ServicerContext[object, object],
    ) -> dra_v1beta1_pb2.NodePrepareResourcesResponse:
        answer = await self.plugin.answer("v1beta1", "prepare", _claims(request.claims), context)
        return dra_v1beta1_pb2.NodePrepareResourcesResponse(
            claims={
                uid: dra_v1beta1_pb2.NodePrepareResourceResponse(
                    error=err,
                    devices=[]
                    if err
                    else [
                        dra_v1beta1_pb2.Device(
                            pool_name="node-a",
                            device_name="gpu-0",
                            cdi_device_ids=[f"k8s.gpu.test/gpu={uid}"],
                        )
                    ],
                )
                for uid, err in answer.items()
            }
        )

    async def NodeUnprepareResources(
        self,
        request: dra_v1beta1_pb2.NodeUnprepareResourcesRequest,
        context: grpc.aio.ServicerContext[object, object],
    ) -> dra_v1beta1_pb2.NodeUnprepareResourcesResponse:
        answer = await self.plugin.answer("v1beta1", "unprepare", _claims(request.claims), context)
        return dra_v1beta1_pb2.NodeUnprepareResourcesResponse(
            claims={uid: dra_v1beta1_pb2.NodeUnprepareResourceResponse(error=err) for uid, err in answer.items()}
        )


class _Health(health_v1alpha1_pb2_grpc.DRAResourceHealthServicer):
    def __init__(self, plugin: FakePlugin) -> None:
        self.plugin = plugin

    async def NodeWatchResources(
        self,
        request: health_v1alpha1_pb2.NodeWatchResourcesRequest,
        context: grpc.aio.ServicerContext[object, object],
    ) -> AsyncIterator[health_v1alpha1_pb2.NodeWatchResourcesResponse]:
        self.plugin.health_watchers += 1
        try:
            while True:
                yield await self.plugin.health.get()
        finally:
            self.plugin.health_ended.set()


# -- fixtures -------------------------------------------------------------------------------------


@pytest.fixture
def sock_dir(tmp_path: Path) -> Iterator[Path]:
    """tmp_path, or a shorter temporary directory when tmp_path would overflow sun_path."""
    if len(str(tmp_path)) <= MAX_SOCKET_DIR:
        yield tmp_path
        return
    short = Path(tempfile.mkdtemp(prefix="kc-"))
    try:
        yield short
    finally:
        shutil.rmtree(short, ignore_errors=True)


class StartPlugin(Protocol):
    async def __call__(self, config: PluginConfig | None = None, subdir: str = "p") -> FakePlugin: ...


@pytest.fixture
async def start_plugin(sock_dir: Path) -> AsyncIterator[StartPlugin]:
    """Starts fake plugins in sock_dir/<subdir> and stops them after the test."""
    plugins: list[FakePlugin] = []

    async def start(config: PluginConfig | None = None, subdir: str = "p") -> FakePlugin:
        directory = sock_dir / subdir
        directory.mkdir(exist_ok=True)
        plugin = FakePlugin(directory, config or PluginConfig())
        await plugin.start()
        plugins.append(plugin)
        return plugin

    yield start
    for plugin in plugins:
        plugin.never.set()
        await plugin.stop()


CLAIMS: list[ClaimTuple] = [("ns-a", "claim-a", "uid-a"), ("ns-b", "claim-b", "uid-b")]


# -- registration and version selection -----------------------------------------------------------


async def test_registers_and_prefers_v1(start_plugin: StartPlugin) -> None:
    plugin = await start_plugin()
    async with await KubeletClient.register(plugin.reg_socket, driver_name=DRIVER) as client:
        assert client.version == DRA_V1
        assert client.info.endpoint == str(plugin.dra_socket)
        assert client.supports_health
        status = plugin.registrations.get_nowait()
        assert status.plugin_registered
        assert status.error == ""
        await client.prepare(CLAIMS[:1])
    assert [c.version for c in plugin.calls] == ["v1"]


async def test_v1beta1_only_when_v1_missing(start_plugin: StartPlugin) -> None:
    plugin = await start_plugin(PluginConfig(versions=[DRA_V1BETA1], serve={DRA_V1BETA1}))
    async with await KubeletClient.register(plugin.reg_socket) as client:
        assert client.version == DRA_V1BETA1
        assert not client.supports_health
        results = await client.prepare(CLAIMS)
        assert results["uid-a"].devices == (
            PreparedDevice(
                request_names=(),
                pool_name="node-a",
                device_name="gpu-0",
                cdi_device_ids=("k8s.gpu.test/gpu=uid-a",),
                share_id=None,
            ),
        )
        assert (await client.unprepare(CLAIMS))["uid-b"].ok
    assert [(c.version, c.method) for c in plugin.calls] == [("v1beta1", "prepare"), ("v1beta1", "unprepare")]


def test_version_selection_follows_the_plugins_order() -> None:
    assert select_version([DRA_V1, DRA_V1BETA1]) == DRA_V1
    assert select_version(["v2.DRAPlugin", DRA_V1BETA1, DRA_V1]) == DRA_V1BETA1
    assert select_version([HEALTH_V1ALPHA1, DRA_V1BETA1]) == DRA_V1BETA1
    assert select_version([DRA_V1, DRA_V1BETA1], force="v1beta1") == DRA_V1BETA1
    assert select_version([DRA_V1], force=DRA_V1) == DRA_V1
    with pytest.raises(RegistrationError, match="none of the versions supported"):
        select_version(["v2.DRAPlugin"])
    with pytest.raises(ValueError, match="cannot force"):
        select_version([DRA_V1], force="v2")


async def test_forced_version(start_plugin: StartPlugin) -> None:
    plugin = await start_plugin()
    async with await KubeletClient.register(plugin.reg_socket, force_version="v1beta1") as client:
        assert client.version == DRA_V1BETA1
        await client.unprepare(CLAIMS)
    assert [c.version for c in plugin.calls] == ["v1beta1"]


async def test_forcing_an_unadvertised_version_is_reported_to_the_plugin(start_plugin: StartPlugin) -> None:
    plugin = await start_plugin(PluginConfig(versions=[DRA_V1BETA1], serve={DRA_V1BETA1}))
    with pytest.raises(RegistrationError, match="none of the versions supported"):
        await KubeletClient.register(plugin.reg_socket, force_version="v1")
    status = plugin.registrations.get_nowait()
    assert not status.plugin_registered
    assert "plugin validation failed" in status.error


@pytest.mark.parametrize(
    ("config", "driver_name", "message"),
    [
        (PluginConfig(type="CSIPlugin"), None, "no handler registered for plugin type: CSIPlugin"),
        (PluginConfig(versions=["v2.DRAPlugin"]), None, "none of the versions supported"),
        (PluginConfig(), "other.driver", "expected 'other.driver'"),
    ],
    ids=["wrong-type", "no-common-version", "wrong-driver"],
)
async def test_rejected_plugins_are_told_why(
    start_plugin: StartPlugin, config: PluginConfig, driver_name: str | None, message: str
) -> None:
    plugin = await start_plugin(config)
    with pytest.raises(RegistrationError, match=message):
        await KubeletClient.register(plugin.reg_socket, driver_name=driver_name)
    status = plugin.registrations.get_nowait()
    assert not status.plugin_registered
    assert message.split(":", maxsplit=1)[0] in status.error


async def test_empty_endpoint_means_the_registration_socket(start_plugin: StartPlugin) -> None:
    plugin = await start_plugin(PluginConfig(endpoint=""))
    async with await KubeletClient.register(plugin.reg_socket) as client:
        assert client.info.endpoint == str(plugin.reg_socket)
        assert set(await client.prepare(CLAIMS)) == {"uid-a", "uid-b"}


async def test_discover_by_conventional_name(start_plugin: StartPlugin) -> None:
    plugin = await start_plugin()
    assert await find_registration_socket(plugin.registry, DRIVER) == plugin.reg_socket
    async with await KubeletClient.discover(plugin.registry, DRIVER) as client:
        assert client.info.name == DRIVER


async def test_discover_scans_and_skips_hidden_and_dead_sockets(start_plugin: StartPlugin, sock_dir: Path) -> None:
    plugin = await start_plugin()
    registry = sock_dir / "scan"
    registry.mkdir()
    # A socket the kubelet ignores (leading dot; a symlink, which stat follows, to the live
    # plugin), one whose plugin died, and a plain file.
    os.symlink(plugin.reg_socket, registry / ".hidden-reg.sock")
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(registry / "dead-reg.sock"))
    dead.close()
    (registry / "notes.txt").write_text("not a socket")
    with pytest.raises(RegistrationError, match=f"no registration socket for DRA driver '{DRIVER}'"):
        await find_registration_socket(registry, DRIVER, deadline_s=2)
    # A rolling-update style name, found only by asking GetInfo.
    os.symlink(plugin.reg_socket, registry / f"{DRIVER}-0a1b2c-reg.sock")
    found = await find_registration_socket(registry, DRIVER, deadline_s=2)
    assert found == registry / f"{DRIVER}-0a1b2c-reg.sock"
    with pytest.raises(RegistrationError, match="does not exist"):
        await find_registration_socket(sock_dir / "missing", DRIVER)


# -- prepare / unprepare --------------------------------------------------------------------------


async def test_prepare_unprepare_round_trip(start_plugin: StartPlugin) -> None:
    plugin = await start_plugin()
    async with await KubeletClient.register(plugin.reg_socket) as client:
        prepared = await client.prepare([ClaimRef("ns-a", "claim-a", "uid-a"), CLAIMS[1]])
        assert set(prepared) == {"uid-a", "uid-b"}
        result = prepared["uid-a"]
        assert result.ok
        assert result.devices == (
            PreparedDevice(("gpu",), "node-a", "gpu-0", ("k8s.gpu.test/gpu=uid-a-0",), "share-uid-a"),
            PreparedDevice(("gpu",), "node-a", "gpu-1", ("k8s.gpu.test/gpu=uid-a-1",), None),
        )
        unprepared = await client.unprepare(CLAIMS)
        assert {uid: r.ok for uid, r in unprepared.items()} == {"uid-a": True, "uid-b": True}
    # namespace / name / uid reach the plugin in the right fields.
    assert [(c.method, c.claims) for c in plugin.calls] == [("prepare", CLAIMS), ("unprepare", CLAIMS)]


async def test_per_claim_error_is_a_result(start_plugin: StartPlugin) -> None:
    plugin = await start_plugin(PluginConfig(claim_errors={"uid-b": "device gpu-7 is unhealthy"}))
    async with await KubeletClient.register(plugin.reg_socket) as client:
        prepared = await client.prepare(CLAIMS)
        assert prepared["uid-a"].ok
        assert not prepared["uid-b"].ok
        assert prepared["uid-b"].error == "device gpu-7 is unhealthy"
        assert prepared["uid-b"].devices == ()
        unprepared = await client.unprepare(CLAIMS)
        assert unprepared["uid-b"].error == "device gpu-7 is unhealthy"


@pytest.mark.parametrize("version", ["v1", "v1beta1"])
async def test_left_out_claims(start_plugin: StartPlugin, version: str) -> None:
    plugin = await start_plugin(PluginConfig(leave_out={"uid-b"}))
    async with await KubeletClient.register(plugin.reg_socket, force_version=version) as client:
        with pytest.raises(ClaimMismatchError, match=r"^NodePrepareResources left out 1 claims"):
            await client.prepare(CLAIMS)
        with pytest.raises(ClaimMismatchError, match=r"^NodeUnprepareResources left out 1 claims"):
            await client.unprepare(CLAIMS)


async def test_unknown_claim_uid(start_plugin: StartPlugin) -> None:
    plugin = await start_plugin(PluginConfig(extra_uid="uid-zzz"))
    async with await KubeletClient.register(plugin.reg_socket) as client:
        with pytest.raises(ClaimMismatchError, match="unknown claim UID uid-zzz"):
            await client.prepare(CLAIMS)


async def test_grpc_error_fails_the_call(start_plugin: StartPlugin) -> None:
    plugin = await start_plugin(PluginConfig(abort=grpc.StatusCode.INTERNAL))
    async with await KubeletClient.register(plugin.reg_socket) as client:
        with pytest.raises(PluginCallError, match="NodePrepareResources failed: INTERNAL") as info:
            await client.prepare(CLAIMS)
        assert info.value.code == grpc.StatusCode.INTERNAL
        assert info.value.details == "plugin exploded"


async def test_call_deadline(start_plugin: StartPlugin) -> None:
    plugin = await start_plugin(PluginConfig(hang=True))
    async with await KubeletClient.register(plugin.reg_socket, call_timeout=0.2) as client:
        assert client.call_timeout == 0.2
        with pytest.raises(PluginCallError) as info:
            await client.prepare(CLAIMS)
        assert info.value.code == grpc.StatusCode.DEADLINE_EXCEEDED


async def test_default_deadline_is_the_kubelets(start_plugin: StartPlugin) -> None:
    plugin = await start_plugin()
    async with await KubeletClient.register(plugin.reg_socket) as client:
        assert client.call_timeout == 45.0


async def test_trace_context_travels_as_metadata(start_plugin: StartPlugin) -> None:
    plugin = await start_plugin()
    tracer = TracerProvider().get_tracer("test")
    async with await KubeletClient.register(plugin.reg_socket) as client:
        await client.prepare(CLAIMS[:1])
        with tracer.start_as_current_span("kubelet prepare") as span:
            await client.prepare(CLAIMS[:1])
            trace_id = f"{span.get_span_context().trace_id:032x}"
    untraced, traced = plugin.calls
    assert "traceparent" not in untraced.metadata
    assert traced.metadata["traceparent"].split("-")[1] == trace_id


# -- health stream --------------------------------------------------------------------------------


def _health(pool: str, device: str, status: int, message: str = "") -> health_v1alpha1_pb2.DeviceHealth:
    return health_v1alpha1_pb2.DeviceHealth(
        device=health_v1alpha1_pb2.DeviceIdentifier(pool_name=pool, device_name=device),
        health=health_v1alpha1_pb2.HealthStatus.ValueType(status),
        last_updated_time=1_700_000_000,
        health_check_timeout_seconds=30,
        message=message,
    )


async def test_health_stream(start_plugin: StartPlugin) -> None:
    plugin = await start_plugin()
    plugin.health.put_nowait(
        health_v1alpha1_pb2.NodeWatchResourcesResponse(
            devices=[_health("node-a", "gpu-0", health_v1alpha1_pb2.HEALTHY), _health("node-a", "gpu-1", 0)]
        )
    )
    plugin.health.put_nowait(
        health_v1alpha1_pb2.NodeWatchResourcesResponse(
            devices=[
                _health("node-a", "gpu-0", health_v1alpha1_pb2.UNHEALTHY, "XID 79"),
                _health("node-a", "gpu-1", 7),  # a value from a newer enum reads as Unknown
            ]
        )
    )
    async with await KubeletClient.register(plugin.reg_socket) as client:
        stream = client.watch_health()
        first = await anext(stream)
        assert first[0] == DeviceHealth("node-a", "gpu-0", HealthStatus.HEALTHY, 1_700_000_000, 30, "")
        assert first[1].health == HealthStatus.UNKNOWN
        second = await anext(stream)
        assert [(d.device_name, d.health, d.message) for d in second] == [
            ("gpu-0", HealthStatus.UNHEALTHY, "XID 79"),
            ("gpu-1", HealthStatus.UNKNOWN, ""),
        ]
        await stream.aclose()
        await plugin.health_ended.wait()  # closing the iterator cancelled the server's stream
    assert plugin.health_watchers == 1


async def test_health_stream_needs_the_advertisement(start_plugin: StartPlugin) -> None:
    plugin = await start_plugin(PluginConfig(versions=[DRA_V1], serve={DRA_V1, HEALTH_V1ALPHA1}))
    plugin.health.put_nowait(health_v1alpha1_pb2.NodeWatchResourcesResponse())
    async with await KubeletClient.register(plugin.reg_socket) as client:
        with pytest.raises(KubeletClientError, match=r"does not advertise v1alpha1\.DRAResourceHealth"):
            client.watch_health()
        # Like the kubelet 1.34-1.36, which opens the stream regardless.
        stream = client.watch_health(require_advertised=False)
        assert await anext(stream) == []
        await stream.aclose()


async def test_health_stream_unimplemented(start_plugin: StartPlugin) -> None:
    plugin = await start_plugin(PluginConfig(serve={DRA_V1}))
    async with await KubeletClient.register(plugin.reg_socket) as client:
        with pytest.raises(PluginCallError, match="NodeWatchResources failed: UNIMPLEMENTED"):
            await anext(client.watch_health())
