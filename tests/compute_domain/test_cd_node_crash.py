"""SIGKILL of the compute-domain node service while a channel claim waits for its IMEX daemon: the daemon dies
with it, and the next start leaves nothing behind (no CDI spec, no ledger record, no domain files, the node out
of the domain)."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from libs.bus import Bus
from libs.events.catalogue.computedomains import ComputeDomainNodeChanged
from libs.natsserver import EmbeddedNats
from services.compute_domain.node.imex_config import domain_files
from services.compute_domain.node.ledger import LEDGER_FILE, Ledger
from services.compute_domain.node.simulated_imex import HOLD_FILE
from tests.compute_domain.cd_story_support import (
    WAIT,
    claim_on,
    create_domain,
    create_nodes,
    daemon_pid,
    node_env,
    prepare,
    running_controller,
    settings_for,
    shim_bus,
    spec_file,
)
from tests.compute_domain.test_cd_controller import ready_reason
from tests.support.kubeapi import KubeApiServer
from tests.support.watching import events_of, exited

REPO = Path(__file__).resolve().parents[2]
NODE = "gb-0"


@asynccontextmanager
async def service(env: dict[str, str], log: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    """``python -m services.compute_domain``, returned once it says it is ready; killed on the way out."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.compute_domain", cwd=REPO, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    assert process.stdout is not None
    try:
        async with asyncio.timeout(WAIT):
            with log.open("ab") as sink:
                while b"service ready" not in (line := await process.stdout.readline()):
                    sink.write(line)
                    assert line, f"the service exited: {log.read_text()[-2000:]}"
        pump = asyncio.create_task(_drain(process, log))
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
    await pump


async def _drain(process: asyncio.subprocess.Process, log: Path) -> None:
    assert process.stdout is not None
    with log.open("ab") as sink:
        while line := await process.stdout.readline():
            sink.write(line)


async def next_event(heard: asyncio.Queue[ComputeDomainNodeChanged], wanted: Any) -> ComputeDomainNodeChanged:
    async with asyncio.timeout(WAIT):
        while not wanted(event := await heard.get()):
            pass
    return event


async def test_a_sigkill_while_a_channel_claim_waits_for_its_daemon_leaves_nothing_behind(
    nats_server: EmbeddedNats, bus: Bus, installed: KubeApiServer, tmp_path: Path
) -> None:
    create_nodes(installed, NODE)
    home = tmp_path / NODE
    settings = settings_for(nats_server.url, installed.url, NODE, home)
    env = node_env(nats_server.url, installed.url, NODE, home)
    heard = await events_of(bus, ComputeDomainNodeChanged, NODE)
    async with running_controller(nats_server.url, installed.url):
        uid = create_domain(installed, "train", 1)
        files = domain_files(home, uid)
        files.directory.mkdir(parents=True)
        (files.directory / HOLD_FILE).touch()  # the daemon runs but is not ready: the prepare waits
        claim = claim_on(installed, "train-0", uid, NODE)
        shim = await shim_bus(nats_server.url, NODE)
        try:
            async with service(env, tmp_path / "first.log") as first:
                preparing = asyncio.create_task(prepare(shim, NODE, claim))
                waiting = await next_event(heard, lambda e: e.member and "IMEX daemon is not ready" in e.reason)
                assert waiting.status == "NotReady"
                pid = daemon_pid(settings, uid)
                assert Ledger.load(home / "computedomains").records[claim.uid].state == "started"
                first.kill()
            async with asyncio.timeout(WAIT):
                await exited(pid)  # the daemon died with its service
            preparing.cancel()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await preparing

            async with service(env, tmp_path / "second.log"):
                left = await next_event(heard, lambda e: not e.member)
                assert left.domain_uid == uid
                assert Ledger.load(home / "computedomains").records == {}
                assert (home / "computedomains" / LEDGER_FILE).exists()
                assert not spec_file(settings, claim).exists()
                assert not files.directory.exists()
                await installed.store.wait_for(
                    lambda: (installed.store.get("computedomains", "train") or {}).get("status", {}).get("nodes") == [],
                    WAIT,
                )
                assert ready_reason(installed.store.get("computedomains", "train") or {})[1:] == (
                    "WaitingForNodes",
                    "0 of 1 nodes joined",
                )
        finally:
            await shim.close()
