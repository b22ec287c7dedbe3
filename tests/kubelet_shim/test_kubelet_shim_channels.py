"""The shim's second driver, ``compute-domain.gpudra.io``: its own registration and DRA sockets, its calls go to
the node's compute_domain (``PrepareChannels``), the GPU driver's still to claim_preparation, never crossing.

compute_domain is played by ``ChannelResponder``, a real ``nats.micro`` service serving only the channel
commands, as ``Responder`` serves only the claim ones: a call sent down the wrong route finds nobody.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc.aio
import msgspec
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cli import endpoints
from cli.main import parser
from cli.up import layout, remove_sockets, service_env, socket_path_problem
from libs.bus import Bus, CommandError, Endpoint
from libs.events.catalogue import ClaimPrepareResult, ClaimUnprepareResult, PreparedDevice
from libs.events.catalogue.computedomains import (
    PrepareChannels,
    PrepareChannelsReply,
    UnprepareChannels,
    UnprepareChannelsReply,
)
from libs.kubeletclient import DRA_V1, DRA_V1BETA1, HEALTH_V1ALPHA1, KubeletClient, get_plugin_info
from libs.natsserver import EmbeddedNats
from libs.settings import SettingsError, load_settings
from services.kubelet_shim.service import Shim, serve
from services.kubelet_shim.settings import Settings
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
from tests.support.nats_fixture import service_env as bus_env

CHANNELS = "compute-domain.gpudra.io"


@pytest.fixture
def kubelet_dir() -> Iterator[Path]:
    with short_dir() as path:
        yield path


@dataclass
class ChannelResponder:
    """Plays the node's compute_domain: one channel slot per claim, or what the test configured."""

    leave_out: set[str] = field(default_factory=set)
    fail: CommandError | None = None
    calls: list[PrepareChannels | UnprepareChannels] = field(default_factory=list)

    async def prepare(self, command: PrepareChannels) -> PrepareChannelsReply:
        self.calls.append(command)
        if self.fail is not None:
            raise self.fail
        device = PreparedDevice(request_names=["channel"], pool=NODE, device="channel-slot-0", cdi_device_ids=["c=0"])
        return PrepareChannelsReply(
            results={c.uid: ClaimPrepareResult(devices=[device]) for c in command.claims if c.uid not in self.leave_out}
        )

    async def unprepare(self, command: UnprepareChannels) -> UnprepareChannelsReply:
        self.calls.append(command)
        return UnprepareChannelsReply(results={c.uid: ClaimUnprepareResult() for c in command.claims})


@asynccontextmanager
async def compute_domain(nats_url: str, responder: ChannelResponder) -> AsyncIterator[ChannelResponder]:
    """Serve ``responder`` as the "compute_domain" service of node-a until the block exits."""
    bus = await Bus.connect(service_common(nats_url, NODE, "compute_domain"), "compute_domain")
    try:
        await bus.serve(
            "0.0.0-test",
            [Endpoint(PrepareChannels, responder.prepare), Endpoint(UnprepareChannels, responder.unprepare)],
        )
        yield responder
    finally:
        await bus.close()


def _names(calls: list[Any]) -> list[tuple[str, list[str]]]:
    return [(type(call).__name__, [c.uid for c in call.claims]) for call in calls]


@pytest.mark.parametrize("api", [DRA_V1, DRA_V1BETA1])
async def test_channel_claims_go_to_compute_domain_and_gpu_claims_to_claim_preparation(
    bus: Bus, nats_server: EmbeddedNats, kubelet_dir: Path, api: str
) -> None:
    gpu_side, channel_side = Responder(), ChannelResponder()
    async with AsyncExitStack() as stack:
        shim = await stack.enter_async_context(serve(bus, shim_settings(nats_server.url, kubelet_dir)))
        await stack.enter_async_context(claim_preparation(nats_server.url, gpu_side))
        await stack.enter_async_context(compute_domain(nats_server.url, channel_side))
        assert shim.channels is not None
        channels = await KubeletClient.register(
            shim.channels.registration_socket.path, driver_name=CHANNELS, force_version=api
        )
        gpus = await KubeletClient.register(shim.registration_socket.path, driver_name=DRIVER, force_version=api)
        stack.push_async_callback(channels.close)
        stack.push_async_callback(gpus.close)

        channel = (await channels.prepare([claim("c1")]))["c1"]
        gpu = (await gpus.prepare([claim("g1")]))["g1"]
        assert (await channels.unprepare([claim("c1")]))["c1"].ok
        assert (await gpus.unprepare([claim("g1")]))["g1"].ok
        registrations = {path.name for path in shim.registration_socket.path.parent.iterdir()}

    assert channel.ok
    assert gpu.ok
    assert [d.device_name for d in channel.devices] == ["channel-slot-0"]
    assert [d.device_name for d in gpu.devices] == ["gpu-0"]
    assert _names(channel_side.calls) == [("PrepareChannels", ["c1"]), ("UnprepareChannels", ["c1"])]
    assert _names(gpu_side.calls) == [("PrepareClaims", ["g1"]), ("UnprepareClaims", ["g1"])]
    assert registrations == {f"{DRIVER}-reg.sock", f"{CHANNELS}-reg.sock"}
    # Both drivers are deregistered on stop: their registration sockets go, and their DRA sockets.
    assert not shim.registration_socket.path.exists()
    assert not shim.channels.registration_socket.path.exists()
    assert not shim.dra_socket.path.exists()
    assert not shim.channels.dra_socket.path.exists()


class _Removals(logging.Handler):
    """At each socket the shim removes: which of ``watched`` still exist at that moment."""

    def __init__(self, watched: list[Path]) -> None:
        super().__init__()
        self.watched = watched
        self.seen: list[tuple[Path, list[bool]]] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage() == "socket removed":
            self.seen.append((Path(record.__dict__["socket"]), [path.exists() for path in self.watched]))


async def test_stop_deregisters_each_driver_before_its_calls_end(
    bus: Bus, nats_server: EmbeddedNats, kubelet_dir: Path
) -> None:
    """Driver by driver, the second first: its registration socket goes while its DRA socket still serves."""
    settings = shim_settings(nats_server.url, kubelet_dir)
    channel_sockets = settings.sockets(CHANNELS, settings.compute_domain_plugin_dir)
    removals = _Removals([channel_sockets[1], settings.dra_socket])
    sockets = logging.getLogger("services.kubelet_shim.sockets")
    level = sockets.level
    sockets.addHandler(removals)
    sockets.setLevel(logging.INFO)
    try:
        async with serve(bus, settings):
            assert removals.seen == []
    finally:
        sockets.removeHandler(removals)
        sockets.setLevel(level)
    assert removals.seen == [(channel_sockets[0], [True, True]), (settings.registration_socket, [False, True])]


async def test_the_second_driver_registers_under_its_name_without_a_health_stream(
    bus: Bus, nats_server: EmbeddedNats, kubelet_dir: Path
) -> None:
    """The kubelet opens the health stream on every driver that advertises it; channels have no device health."""
    settings = shim_settings(nats_server.url, kubelet_dir, pod_uid="0f1e2d3c-aaaa")
    async with serve(bus, settings) as shim:
        assert shim.channels is not None
        info = await get_plugin_info(shim.channels.registration_socket.path)
        gpu_info = await get_plugin_info(shim.registration_socket.path)
        async with await KubeletClient.register(shim.channels.registration_socket.path, driver_name=CHANNELS):
            await asyncio.wait_for(shim.channels.registration.notified.wait(), 5)
    assert info.name == CHANNELS
    assert info.supported_versions == (DRA_V1, DRA_V1BETA1)
    assert gpu_info.supported_versions == (DRA_V1, DRA_V1BETA1, HEALTH_V1ALPHA1)
    assert shim.channels.registration_socket.path.name == f"{CHANNELS}-0f1e2d3c-aaaa-reg.sock"
    assert info.endpoint == str(Path(settings.compute_domain_plugin_dir) / "dra-0f1e2d3c-aaaa.sock")
    assert shim.channels.registration.last_status is not None
    assert shim.channels.registration.last_status.plugin_registered


async def test_the_default_plugin_dir_is_the_drivers_own_under_the_kubelet_dir(
    bus: Bus, nats_server: EmbeddedNats, kubelet_dir: Path
) -> None:
    async with serve(bus, shim_settings(nats_server.url, kubelet_dir, compute_domain_plugin_dir="")) as shim:
        assert shim.channels is not None
        assert shim.channels.dra_socket.path == kubelet_dir / "plugins" / CHANNELS / "dra.sock"
        assert (await get_plugin_info(shim.channels.registration_socket.path)).endpoint == str(
            shim.channels.dra_socket.path
        )


async def _channel_errors(shim: Shim, *uids: str) -> dict[str, str]:
    assert shim.channels is not None
    async with await KubeletClient.register(shim.channels.registration_socket.path, driver_name=CHANNELS) as client:
        return {uid: result.error for uid, result in (await client.prepare([claim(uid) for uid in uids])).items()}


async def test_without_compute_domain_the_error_names_it_and_the_node(
    bus: Bus, nats_server: EmbeddedNats, kubelet_dir: Path
) -> None:
    async with (
        serve(bus, shim_settings(nats_server.url, kubelet_dir, prepare_timeout=1.0)) as shim,
        claim_preparation(nats_server.url, Responder()) as gpu_side,  # running, but not the one to ask
    ):
        errors = await _channel_errors(shim, "c1")
    assert errors["c1"].startswith("claim default/claim-c1 (uid 'c1'): ")
    assert f"compute_domain on node {NODE} is unreachable" in errors["c1"]
    assert "claim_preparation" not in errors["c1"]
    assert gpu_side.calls == []


async def test_compute_domains_failures_and_omissions_name_it(
    bus: Bus, nats_server: EmbeddedNats, kubelet_dir: Path
) -> None:
    channel_side = ChannelResponder(leave_out={"c2"})
    async with (
        serve(bus, shim_settings(nats_server.url, kubelet_dir)) as shim,
        compute_domain(nats_server.url, channel_side),
    ):
        left_out = await _channel_errors(shim, "c1", "c2")
        channel_side.fail = CommandError(500, "the IMEX daemon of domain d1 is not ready")
        failed = await _channel_errors(shim, "c3")
    assert left_out["c1"] == ""
    assert left_out["c2"].endswith(f"compute_domain on node {NODE} sent no result for it")
    assert f"compute_domain on node {NODE} failed: the IMEX daemon of domain d1 is not ready" in failed["c3"]


async def test_an_empty_driver_name_serves_no_second_driver(
    bus: Bus, nats_server: EmbeddedNats, kubelet_dir: Path
) -> None:
    settings = shim_settings(nats_server.url, kubelet_dir, compute_domain_driver_name="")
    async with serve(bus, settings) as shim:
        registrations = sorted(path.name for path in shim.registration_socket.path.parent.iterdir())
        sockets = sorted(str(path.relative_to(kubelet_dir)) for path in kubelet_dir.rglob("*.sock"))
    assert shim.channels is None
    assert registrations == [f"{DRIVER}-reg.sock"]
    assert sockets == [f"plugins/{DRIVER}/dra.sock", f"plugins_registry/{DRIVER}-reg.sock"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"compute_domain_driver_name": DRIVER}, "is also --driver-name"),
        ({"compute_domain_plugin_dir": "/k/plugins/gpu", "plugin_dir": "/k/plugins/gpu"}, "both drivers would serve"),
    ],
    ids=["same-name", "same-dra-socket"],
)
def test_the_two_drivers_may_not_share_a_socket(overrides: dict[str, str], message: str) -> None:
    """Refused when the settings are read (exit 2 naming the flags), not when the second bind fails."""
    env = {"GPUDRA_NATS_URL": "nats://127.0.0.1:4222", "GPUDRA_NODE_NAME": NODE}
    env |= {f"GPUDRA_{name.upper()}": value for name, value in overrides.items()}
    with pytest.raises(SettingsError, match=message):
        load_settings(Settings, [], env)
    assert load_settings(Settings, [], env | {"GPUDRA_COMPUTE_DOMAIN_DRIVER_NAME": ""}).compute_domain_driver_name == ""


# -- the grpc health probe -------------------------------------------------------------------------------


async def _probe(target: str) -> int:
    async with grpc.aio.insecure_channel(target) as channel:
        stub: Any = health_pb2_grpc.HealthStub(channel)  # the stubs package leaves the methods out
        answer: health_pb2.HealthCheckResponse = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
    return answer.status


async def test_the_health_probe_covers_the_second_drivers_sockets(
    bus: Bus, nats_server: EmbeddedNats, kubelet_dir: Path
) -> None:
    async with serve(bus, shim_settings(nats_server.url, kubelet_dir, grpc_health_port=0)) as shim:
        assert shim.channels is not None
        tcp = f"127.0.0.1:{shim.probe_port}"
        assert await _probe(tcp) == health_pb2.HealthCheckResponse.SERVING
        assert await _probe(f"unix://{shim.channels.dra_socket.path}") == health_pb2.HealthCheckResponse.SERVING
        os.unlink(shim.channels.registration_socket.path)  # the kubelet forgot the second driver only
        assert shim.registration_socket.is_ours()
        assert await _probe(tcp) == health_pb2.HealthCheckResponse.NOT_SERVING


# -- standalone: gpudra up's layout and gpudra kubelet ----------------------------------------------------


def test_an_endpoints_file_of_before_the_second_driver_still_loads(tmp_path: Path) -> None:
    system = layout(tmp_path, NODE, "dgx-h100", "nats://127.0.0.1:4222")
    raw = msgspec.json.decode(msgspec.json.encode(system))
    for kubelet in [raw["kubelet"], *(node["kubelet"] for node in raw["nodes"].values())]:
        del kubelet["compute_domain_plugins_dir"]
    (tmp_path / endpoints.FILENAME).write_bytes(msgspec.json.encode(raw))
    assert endpoints.read(tmp_path).kubelet.compute_domain_plugins_dir == ""
    assert socket_path_problem(endpoints.read(tmp_path)) == ""


def _moved(system: endpoints.Endpoints, node: str, compute_domain_plugins_dir: Path) -> endpoints.Endpoints:
    """``system`` with ``node``'s compute-domain plugins directory elsewhere."""
    paths = system.on(node)
    kubelet = msgspec.structs.replace(paths.kubelet, compute_domain_plugins_dir=str(compute_domain_plugins_dir))
    nodes = {**system.nodes, node: msgspec.structs.replace(paths, kubelet=kubelet)}
    return msgspec.structs.replace(system, nodes=nodes)


def test_gpudra_up_lays_out_checks_and_removes_the_second_drivers_sockets(kubelet_dir: Path) -> None:
    state_dir = kubelet_dir  # short enough for every socket path
    system = layout(state_dir, NODE, "dgx-h100", "nats://127.0.0.1:4222", count=2)
    assert socket_path_problem(system) == ""
    for node in system.node_names():
        kubelet = system.on(node).kubelet
        assert Path(kubelet.compute_domain_plugins_dir).parent == Path(kubelet.root) / "plugins"
        assert service_env(system, node)["GPUDRA_COMPUTE_DOMAIN_PLUGIN_DIR"] == kubelet.compute_domain_plugins_dir
    last = system.node_names()[-1]
    too_long = _moved(system, last, Path("/tmp") / ("c" * 100))
    assert socket_path_problem(too_long).startswith(f"/tmp/{'c' * 100}/dra.sock is 114 bytes, over the 107-byte")

    outside = state_dir / "elsewhere"  # outside the kubelet root: cleaned up all the same
    outside.mkdir()
    (outside / "dra.sock").touch()
    remove_sockets(_moved(system, last, outside))
    assert not (outside / "dra.sock").exists()


async def _cli(*argv: str) -> int:
    """Run a ``gpudra`` command in a thread: it runs its own event loop, the shim runs in this one."""
    args = parser().parse_args(list(argv))
    code: int = await asyncio.to_thread(args.run, args)
    return code


@pytest.mark.parametrize("depth", [0, 46], ids=["short", "deep-state-dir"])
async def test_gpudra_kubelet_prepares_a_channel_claim_through_the_second_driver(
    bus: Bus, nats_server: EmbeddedNats, capsys: pytest.CaptureFixture[str], depth: int
) -> None:
    """The shim as ``gpudra up`` configures it (its environment), found by ``gpudra kubelet --driver``;
    ``deep-state-dir``: the registration sockets' paths are over 107 bytes (the DRA sockets' are not)."""
    with short_dir() as top:
        state_dir = top / ("d" * depth) if depth else top
        state_dir.mkdir(exist_ok=True)
        system = layout(state_dir, NODE, "dgx-h100", nats_server.url)
        assert socket_path_problem(system) == ""
        endpoints.write(system)
        environment = {**bus_env(nats_server.url, NODE, "kubelet_shim"), **service_env(system)}
        settings = load_settings(Settings, [], environment)  # as gpudra up starts the shim
        channel_side = ChannelResponder()
        async with serve(bus, settings) as shim, compute_domain(nats_server.url, channel_side):
            assert shim.channels is not None
            assert str(shim.channels.dra_socket.path.parent) == system.kubelet.compute_domain_plugins_dir
            state = ["--state-dir", str(state_dir)]
            channel = ["ch-0", "--uid", "c1", "--driver", CHANNELS, *state]
            assert await _cli("kubelet", "prepare", *channel, "-o", "json") == 0
            prepared = json.loads(capsys.readouterr().out)
            assert await _cli("kubelet", "unprepare", *channel) == 0
        remove_sockets(system)
        assert list(Path(system.kubelet.root).rglob("*.sock")) == []
    assert prepared["c1"]["devices"][0]["device_name"] == "channel-slot-0"
    assert _names(channel_side.calls) == [("PrepareChannels", ["c1"]), ("UnprepareChannels", ["c1"])]
