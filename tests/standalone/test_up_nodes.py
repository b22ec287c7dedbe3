"""``gpudra up --nodes 3``: three simulated nodes on one NATS server, each with its own services, credentials,
state and kubelet sockets, supervised together."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cli import endpoints
from cli.up import SERVICES
from libs.bus import Bus
from libs.bus.directory import list_services
from libs.events import decode, event_subject
from libs.events.catalogue import ClaimPrepared, ServiceCrashed
from libs.settings import CommonSettings
from tests.standalone.test_up import as_operator, refusals
from tests.standalone.up_support import System, gpudra, running_up
from tests.support.watching import events_of
from tests.trust.trust_support import publish, refusal

pytestmark = pytest.mark.slow

NODES = ("gb-0", "gb-1", "gb-2")


@pytest.fixture
async def system(tmp_path: Path) -> AsyncIterator[System]:
    async with running_up(tmp_path, "--node", "gb", "--nodes", "3", "--profile", "gb200-nvl72") as running:
        yield running


def as_node_service(system: endpoints.Endpoints, node: str, service: str) -> CommonSettings:
    creds = str(Path(system.on(node).credentials_dir) / f"{service}.creds")
    return CommonSettings(nats_url=system.nats_url, nats_creds=creds, node_name=node)


async def run_cli(*args: str) -> str:
    process = await gpudra(*args)
    out, _ = await process.communicate()
    assert process.returncode == 0, out.decode()
    return out.decode()


async def test_every_node_has_its_services_sockets_and_state_and_prepares_its_own_claims(system: System) -> None:
    _, started = system
    assert list(started.nodes) == list(NODES)
    assert started.node == "gb-0"
    assert started.kubelet == started.nodes["gb-0"].kubelet  # the top-level fields are the first node's
    assert len({paths.kubelet.plugins_dir for paths in started.nodes.values()}) == 3
    assert len({paths.state_dir for paths in started.nodes.values()}) == 3
    bus = await Bus.connect(as_operator(started), "operator")
    try:
        running = {(info.node, info.name) for info in await list_services(bus.nc)}
        assert {(node, service) for node in NODES for service in SERVICES} <= running
        prepared = await events_of(bus, ClaimPrepared)
        state = ["--state-dir", started.state_dir]
        await run_cli("claim", "create", "on-two", "--device", "gpu-1", "--node", "gb-2", *state)
        out = await run_cli("kubelet", "prepare", "on-two", "--node", "gb-2", *state)
        assert "gb-2/gpu-1" in out
        event = await asyncio.wait_for(prepared.get(), 10)
        assert (event.node, event.claim.name) == ("gb-2", "on-two")
    finally:
        await bus.close()
    specs = {node: sorted(Path(paths.cdi_dir).glob("*.json")) for node, paths in started.nodes.items()}
    assert [node for node, found in specs.items() if found] == ["gb-2"]


async def test_a_nodes_credentials_do_not_reach_another_node(system: System) -> None:
    _, started = system
    bus = await Bus.connect(as_node_service(started, "gb-0", "claim_preparation"), "claim_preparation")
    try:
        other = event_subject("gb-2", ClaimPrepared.domain, ClaimPrepared.topic)
        assert f'publish to "{other}"' in await refusal(bus, publish(bus, other))
    finally:
        await bus.close()


async def test_a_killed_service_is_restarted_and_reported_for_its_node_and_all_stop_cleanly(system: System) -> None:
    process, started = system
    old_pid = started.nodes["gb-1"].services["claim_preparation"]
    bus = await Bus.connect(as_operator(started), "operator")
    try:
        crashes = await bus.nc.subscribe("gpudra.v1.*.system.services")
        os.kill(old_pid, signal.SIGKILL)
        msg = await crashes.next_msg(timeout=30)
        crash = decode(msg.headers, msg.data).data
        assert isinstance(crash, ServiceCrashed)
        assert (crash.node, crash.service, crash.exit_code) == ("gb-1", "claim_preparation@gb-1", -9)
        async with asyncio.timeout(60):  # each look-up waits for answers, so this loop does not spin
            while not await restarted(bus, "gb-1", "claim_preparation", old_pid):
                pass
    finally:
        await bus.close()
    assert endpoints.read(started.state_dir).nodes["gb-1"].services["claim_preparation"] != old_pid

    process.send_signal(signal.SIGINT)
    assert await asyncio.wait_for(process.wait(), 60) == 0
    assert refusals(started) == []  # every node's services and the supervisor had what they needed
    for paths in started.nodes.values():
        assert not list(Path(paths.kubelet.root).rglob("*.sock"))


async def restarted(bus: Bus, node: str, service: str, old_pid: int) -> bool:
    found = [info for info in await list_services(bus.nc) if (info.node, info.name) == (node, service)]
    return bool(found) and int(found[0].metadata["pid"]) != old_pid
