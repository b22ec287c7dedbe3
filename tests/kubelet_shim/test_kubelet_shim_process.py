"""kubelet_shim as a real process (start, serve, SIGTERM), and ``gpudra kubelet`` against a running shim."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from pathlib import Path

import pytest

from cli import endpoints
from cli.main import parser
from cli.up import layout
from libs.bus import Bus
from libs.kubeletclient import DRA_V1, KubeletClient
from libs.natsserver import EmbeddedNats
from services.kubelet_shim.service import serve
from tests.kubelet_shim.shim_support import DRIVER, NODE, Responder, claim, claim_preparation, shim_settings, short_dir
from tests.support.nats_fixture import service_env

READY = b"serving the kubelet"
CHANNELS = "compute-domain.gpudra.io"


def _shim_env(nats_url: str, kubelet_dir: Path) -> dict[str, str]:
    return {
        **os.environ,
        **service_env(nats_url, NODE, "kubelet_shim"),
        "GPUDRA_KUBELET_DIR": str(kubelet_dir),
        "GPUDRA_METRICS_PORT": "-1",
        "GPUDRA_LOG_FORMAT": "json",
        "OTEL_SDK_DISABLED": "true",
    }


async def _start(nats_url: str, kubelet_dir: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.kubelet_shim",
        env=_shim_env(nats_url, kubelet_dir),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )


async def _read_until(process: asyncio.subprocess.Process, marker: bytes, timeout: float = 20) -> bytes:
    """Log lines up to the one holding ``marker``; fails with the log when the process ends first."""
    assert process.stdout is not None
    seen = b""
    async with asyncio.timeout(timeout):
        while marker not in seen:
            line = await process.stdout.readline()
            if not line:
                pytest.fail(f"kubelet_shim exited ({await process.wait()}) before {marker!r}:\n{seen.decode()}")
            seen += line
    return seen


async def test_the_shim_process_serves_the_kubelet_and_stops_cleanly(nats_server: EmbeddedNats) -> None:
    with short_dir() as kubelet_dir:
        process = await _start(nats_server.url, kubelet_dir)
        try:
            async with claim_preparation(nats_server.url, Responder()) as responder:
                await _read_until(process, READY)
                registration = kubelet_dir / "plugins_registry" / f"{DRIVER}-reg.sock"
                channels = kubelet_dir / "plugins_registry" / f"{CHANNELS}-reg.sock"
                assert channels.is_socket()  # the second driver, by default
                async with await KubeletClient.register(registration, driver_name=DRIVER) as client:
                    prepared = await client.prepare([claim("u1")])
                assert client.version == DRA_V1
                assert prepared["u1"].ok
                assert len(responder.calls) == 1
            process.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(process.wait(), 15) == 0
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
        assert not registration.exists()
        assert not channels.exists()
        assert list(kubelet_dir.rglob("*.sock")) == []


async def test_the_shim_process_refuses_a_socket_another_process_serves(nats_server: EmbeddedNats) -> None:
    with short_dir() as kubelet_dir:
        registration = kubelet_dir / "plugins_registry" / f"{DRIVER}-reg.sock"
        registration.parent.mkdir(parents=True)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as other:
            other.bind(str(registration))
            other.listen()
            process = await _start(nats_server.url, kubelet_dir)
            code = await asyncio.wait_for(process.wait(), 20)
            assert process.stdout is not None
            output = (await process.stdout.read()).decode()
    assert code == 1
    assert "served by another running process" in output


# -- gpudra kubelet ------------------------------------------------------------------------------------


async def _cli(*argv: str) -> int:
    """Run a ``gpudra`` command in a thread: it runs its own event loop, the shim runs in this one."""
    args = parser().parse_args(list(argv))
    code: int = await asyncio.to_thread(args.run, args)
    return code


@pytest.mark.parametrize("depth", [0, 46], ids=["short", "deep-state-dir"])
async def test_cli_prepares_and_unprepares_like_the_kubelet(
    bus: Bus, nats_server: EmbeddedNats, capsys: pytest.CaptureFixture[str], depth: int
) -> None:
    """``deep-state-dir``: the registration socket path is over 107 bytes (the DRA socket's is not)."""
    with short_dir() as top:
        state_dir = top / ("d" * depth) if depth else top
        state_dir.mkdir(exist_ok=True)
        system = layout(state_dir, NODE, "dgx-h100", nats_server.url)
        registration = Path(system.kubelet.registration_dir) / f"{DRIVER}-reg.sock"
        assert (len(str(registration)) > 107) == bool(depth)
        endpoints.write(system)
        settings = shim_settings(nats_server.url, Path(system.kubelet.root))
        responder = Responder(errors={"u2": "claim default/eval not found in the API server"})
        async with serve(bus, settings), claim_preparation(nats_server.url, responder):
            state = ["--state-dir", str(state_dir)]
            assert await _cli("kubelet", "prepare", "train-0", "--uid", "u1", "-o", "json", *state) == 0
            prepared = json.loads(capsys.readouterr().out)
            assert await _cli("kubelet", "prepare", "eval", "--uid", "u2", *state) == 1
            failed = capsys.readouterr().out
            assert await _cli("kubelet", "unprepare", "train-0", "--uid", "u1", "--api", "v1beta1", *state) == 0
            unprepared = capsys.readouterr().out
            assert await _cli("kubelet", "health", *state) == 0
            health = capsys.readouterr().out
    assert prepared["u1"]["devices"][0]["cdi_device_ids"] == [f"k8s.{DRIVER}/claim=u1-gpu-0"]
    assert prepared["u1"]["error"] == ""
    assert failed.splitlines() == ["default/eval (uid u2): FAILED", "  claim default/eval not found in the API server"]
    assert unprepared.strip() == "default/train-0 (uid u1): unprepared"
    assert health.strip() == "(no devices)"
    assert [c.claims[0].name for c in responder.calls] == ["train-0", "eval", "train-0"]


async def test_cli_without_a_uid_or_a_running_system_says_what_to_do(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with short_dir() as state_dir:
        assert await _cli("kubelet", "prepare", "train-0", "--state-dir", str(state_dir)) == 2
        assert "pass --uid" in capsys.readouterr().err
        with pytest.raises(endpoints.NotRunning, match="no running gpudra found"):
            await _cli("kubelet", "prepare", "train-0", "--uid", "u1", "--state-dir", str(state_dir))
