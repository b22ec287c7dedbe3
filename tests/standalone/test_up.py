"""``gpudra up`` end to end: real processes, a real nats-server, supervision, and a clean stop."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest

from cli import endpoints
from cli.up import SERVICES
from libs.bus import Bus, BusError
from libs.bus.directory import ServiceInfo, list_services
from libs.events import decode
from libs.events.catalogue import ClaimRef, ClaimUnprepared, ServiceCrashed
from libs.settings import CommonSettings
from tests.standalone.up_support import System, gpudra, read_until, running_up
from tests.support.watching import exited

pytestmark = pytest.mark.slow


@pytest.fixture
async def system(tmp_path: Path) -> AsyncIterator[System]:
    async with running_up(tmp_path, "--node", "node-0", "--profile", "dgx-h100") as running:
        yield running


def as_operator(system: endpoints.Endpoints) -> CommonSettings:
    """What a ``gpudra`` command connects with: the operator's credentials named in endpoints.json."""
    return CommonSettings(nats_url=system.nats_url, nats_creds=system.nats_creds, node_name=system.node)


def as_service(system: endpoints.Endpoints, service: str) -> CommonSettings:
    creds = str(Path(system.credentials_dir) / f"{service}.creds")
    return CommonSettings(nats_url=system.nats_url, nats_creds=creds, node_name=system.node)


def refusals(system: endpoints.Endpoints) -> list[str]:
    """The permission violations nats-server logged for this system."""
    log = Path(system.state_dir, "nats", "nats-server.log").read_text(errors="replace")
    return [line for line in log.splitlines() if "Violation" in line]


async def services_of(bus: Bus) -> dict[str, ServiceInfo]:
    return {info.name: info for info in await list_services(bus.nc) if info.node == "node-0"}


async def test_up_runs_every_service_restarts_crashes_and_stops_cleanly(
    system: tuple[asyncio.subprocess.Process, endpoints.Endpoints],
) -> None:
    process, system_endpoints = system
    assert system_endpoints.drivers["gpu"] == "gpu.gpudra.io"
    assert Path(system_endpoints.state_dir, "endpoints.json").stat().st_mode & 0o077 == 0
    bus = await Bus.connect(as_operator(system_endpoints), "operator")
    try:
        running = await services_of(bus)
        assert set(running) == set(SERVICES)
        assert all(info.metadata["metrics"].startswith("http://127.0.0.1:") for info in running.values())

        crashes = await bus.nc.subscribe("gpudra.v1.node-0.system.services")
        old_pid = int(running["health"].metadata["pid"])
        os.kill(old_pid, signal.SIGKILL)
        msg = await crashes.next_msg(timeout=30)
        crash = decode(msg.headers, msg.data).data
        assert isinstance(crash, ServiceCrashed)
        assert (crash.service, crash.exit_code, crash.restarts) == ("health", -9, 1)
        async with asyncio.timeout(60):  # each look-up waits for answers, so this loop does not spin
            while int((await services_of(bus)).get("health", running["health"]).metadata["pid"]) == old_pid:
                pass
    finally:
        await bus.close()

    process.send_signal(signal.SIGINT)
    assert await asyncio.wait_for(process.wait(), 60) == 0
    assert refusals(system_endpoints) == []  # every service, the supervisor and the CLI had what they needed
    assert not Path(system_endpoints.state_dir, "endpoints.json").exists()
    assert not list(Path(system_endpoints.kubelet.root).rglob("*.sock"))


async def test_cli_finds_the_system_through_the_state_dir(
    system: tuple[asyncio.subprocess.Process, endpoints.Endpoints],
) -> None:
    _, system_endpoints = system
    listing = await gpudra("services", "--state-dir", system_endpoints.state_dir, "-o", "json")
    out, _ = await listing.communicate()
    assert listing.returncode == 0
    assert {item["name"] for item in msgspec.json.decode(out)} == set(SERVICES)

    tail = await gpudra("events", "tail", "--state-dir", system_endpoints.state_dir, "--count", "1")
    await read_until(tail, "# tailing")
    bus = await Bus.connect(as_service(system_endpoints, "claim_preparation"), "claim_preparation")
    try:
        claim = ClaimRef(namespace="default", name="demo", uid="uid-demo")
        await bus.publish(ClaimUnprepared(node="node-0", claim=claim))
        [line] = await read_until(tail, "ClaimUnprepared")
    finally:
        await bus.close()
    assert "node-0" in line
    assert "subject=uid-demo" in line
    assert await tail.wait() == 0


async def test_too_long_socket_paths_are_refused_before_starting(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 100)
    process = await gpudra("up", "--state-dir", str(deep))
    out, _ = await process.communicate()
    assert process.returncode == 2
    assert "over the 107-byte limit of a unix socket path" in out.decode()
    assert not deep.exists()


async def test_an_unknown_profile_is_refused_before_anything_starts(tmp_path: Path) -> None:
    process = await gpudra("up", "--state-dir", str(tmp_path / "state"), "--profile", "no-such-profile")
    out, _ = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 2
    assert "machine profile no-such-profile: no such built-in profile or file; built-in profiles:" in out.decode()
    assert "dgx-h100" in out.decode()
    assert not (tmp_path / "state").exists()


async def test_a_second_up_on_the_same_state_dir_is_refused_and_the_first_runs_on(
    system: System, tmp_path: Path
) -> None:
    process, running = system
    second = await gpudra("up", "--state-dir", str(tmp_path), "--kubelet-dir", str(tmp_path / "k2"))
    out, _ = await asyncio.wait_for(second.communicate(), 30)
    assert second.returncode == 2
    assert f"another gpudra up (pid {process.pid}) runs on {tmp_path}" in out.decode()
    assert endpoints.read(tmp_path) == running  # its endpoints.json, sockets and services are untouched
    assert Path(running.kubelet.plugins_dir, "dra.sock").is_socket()
    listing = await gpudra("services", "--state-dir", str(tmp_path))
    assert await listing.wait() == 0


async def test_commands_without_a_running_system_say_how_to_start_one(tmp_path: Path) -> None:
    listing = await gpudra("services", "--state-dir", str(tmp_path))
    out, _ = await listing.communicate()
    assert listing.returncode == 1
    assert "no running gpudra found" in out.decode()
    assert f"gpudra up --state-dir {tmp_path}" in out.decode()


async def test_a_killed_nats_server_is_restarted_and_claims_work_again(
    system: tuple[asyncio.subprocess.Process, endpoints.Endpoints],
) -> None:
    """kill -9 of the embedded nats-server: back on the same port and store within seconds, reported, and the
    services (which reconnect by themselves) prepare claims again without a person."""
    process, first = system
    state = ["--state-dir", first.state_dir]
    create = await gpudra("claim", "create", "after-crash", "--device", "gpu-2", *state)
    assert await create.wait() == 0
    os.kill(first.services["nats-server"], signal.SIGKILL)
    bus = await reconnect_as_operator(first)
    try:
        crashes = await bus.js.subscribe(
            "gpudra.v1.node-0.system.services", stream="GPUDRA_SYSTEM", ordered_consumer=True
        )
        crash = decode((msg := await crashes.next_msg(timeout=10)).headers, msg.data).data
        assert isinstance(crash, ServiceCrashed)
        assert (crash.service, crash.exit_code) == ("nats-server", -9)
    finally:
        await bus.close()
    prepare = await gpudra("kubelet", "prepare", "after-crash", *state)
    out, _ = await prepare.communicate()
    assert prepare.returncode == 0, out.decode()
    now = endpoints.read(first.state_dir)
    assert now.services["nats-server"] != first.services["nats-server"]
    assert now.nats_url == first.nats_url
    assert process.returncode is None


async def reconnect_as_operator(system: endpoints.Endpoints, timeout: float = 15.0) -> Bus:
    """The first connection to the restarted server (connect retries for a few seconds by itself)."""
    async with asyncio.timeout(timeout):
        while True:
            try:
                return await Bus.connect(as_operator(system), "operator")
            except BusError:
                continue


async def test_nothing_outlives_a_killed_supervisor(
    system: tuple[asyncio.subprocess.Process, endpoints.Endpoints],
) -> None:
    """kill -9 of ``gpudra up``: its services and its nats-server go with it (the kernel kills them)."""
    process, started = system
    children = list(started.services.values())
    assert len(children) == len(SERVICES) + 1  # and the nats-server
    process.kill()
    await process.wait()
    async with asyncio.timeout(10):
        await asyncio.gather(*(exited(pid) for pid in children))
