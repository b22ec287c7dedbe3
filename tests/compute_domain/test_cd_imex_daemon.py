"""ImexDaemon with a real (simulated) IMEX process: readiness, SIGUSR1 on membership change, restarts, stop."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import msgspec
import pytest

from services.compute_domain.node.daemon import (
    DaemonState,
    DaemonTiming,
    ImexCommands,
    ImexDaemon,
    imex_commands,
)
from services.compute_domain.node.imex_config import Member, daemon_name, domain_files
from services.compute_domain.node.simulated_imex import FAIL_FILE, SimulatedStatus, status_path

UID = "0f6e2a4c-1111-4222-8333-944445555666"
ME = Member(node="tray-1", index=0, ip_address="10.0.0.1")
PEER = Member(node="tray-2", index=1, ip_address="10.0.0.2")
FAST = DaemonTiming(
    reread_interval=0.5, probe_interval=0.2, query_timeout=10, first_backoff=0.05, max_backoff=0.2, stop_grace=5
)
BOUND = 20.0


class States:
    """What the daemon reported, awaitable."""

    def __init__(self) -> None:
        self.seen: list[DaemonState] = []
        self.queue: asyncio.Queue[DaemonState] = asyncio.Queue()

    def __call__(self, state: DaemonState) -> None:
        self.seen.append(state)
        self.queue.put_nowait(state)

    async def until(self, wanted: Callable[[DaemonState], bool]) -> DaemonState:
        async with asyncio.timeout(BOUND):
            while not wanted(state := await self.queue.get()):
                pass
        return state

    async def ready(self) -> None:
        await self.until(lambda s: s.status == "Ready")

    async def not_ready(self) -> DaemonState:
        return await self.until(lambda s: s.status == "NotReady")


def make_daemon(tmp_path: Path, states: States, commands: ImexCommands | None = None, **timing: float) -> ImexDaemon:
    files = domain_files(tmp_path, UID)
    return ImexDaemon(
        domain_uid=UID,
        node="tray-1",
        files=files,
        bind_ip=ME.ip_address,
        commands=commands or imex_commands(str(tmp_path / "no-driver"), files),
        on_state=states,
        timing=msgspec.structs.replace(FAST, **timing),
    )


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[tuple[ImexDaemon, States]]:
    states = States()
    daemon = make_daemon(tmp_path, states)
    await daemon.start([ME])
    await states.ready()
    yield daemon, states
    await daemon.stop()


def status(tmp_path: Path) -> SimulatedStatus | None:
    try:
        return msgspec.json.decode(status_path(domain_files(tmp_path, UID).config).read_bytes(), type=SimulatedStatus)
    except (FileNotFoundError, msgspec.DecodeError):
        return None


async def until_status(tmp_path: Path, wanted: Callable[[SimulatedStatus], bool]) -> SimulatedStatus:
    """Poll the daemon's status file (a file has no event to await) until ``wanted``, within the bound."""
    async with asyncio.timeout(BOUND):
        while (seen := status(tmp_path)) is None or not wanted(seen):  # noqa: ASYNC110 - a file: nothing to await
            await asyncio.sleep(0.05)
    return seen


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


async def until_gone(pid: int) -> None:
    async with asyncio.timeout(BOUND):
        while not gone(pid):  # noqa: ASYNC110 - another process's end: nothing to await
            await asyncio.sleep(0.05)


def test_the_real_tools_are_used_when_the_driver_root_has_them(tmp_path: Path) -> None:
    files = domain_files(tmp_path, UID)
    assert imex_commands(str(tmp_path), files).simulated
    for name in ("nvidia-imex", "nvidia-imex-ctl"):
        tool = tmp_path / "usr/bin" / name
        tool.parent.mkdir(parents=True, exist_ok=True)
        tool.write_text("#!/bin/sh\n")
        tool.chmod(0o755)
    commands = imex_commands(str(tmp_path), files)
    assert not commands.simulated
    assert commands.daemon == (str(tmp_path / "usr/bin/nvidia-imex"), "-c", str(files.config))
    assert commands.query == (str(tmp_path / "usr/bin/nvidia-imex-ctl"), "-c", str(files.config), "-q")


async def test_a_started_daemon_becomes_ready_and_serves_the_members(
    running: tuple[ImexDaemon, States], tmp_path: Path
) -> None:
    seen = await until_status(tmp_path, lambda s: True)
    assert seen.members == {daemon_name(UID, 0): ME.ip_address}
    assert seen.reloads == 0, "a fresh daemon reads the files and gets no SIGUSR1"
    assert running[1].seen[-1] == DaemonState(status="Ready")


async def test_a_membership_change_reaches_the_running_daemon_through_sigusr1(
    running: tuple[ImexDaemon, States], tmp_path: Path
) -> None:
    daemon, _ = running
    pid = daemon.pid
    await daemon.update_members([ME, PEER])
    seen = await until_status(tmp_path, lambda s: s.reloads == 1)
    assert seen.members == {daemon_name(UID, 0): ME.ip_address, daemon_name(UID, 1): PEER.ip_address}
    assert seen.pid == pid, "a membership change does not restart IMEX"


async def test_changes_within_the_reread_interval_are_coalesced_into_one_signal(tmp_path: Path) -> None:
    states = States()
    daemon = make_daemon(tmp_path, states, reread_interval=2.0)
    await daemon.start([ME])
    await states.ready()
    await daemon.update_members([ME, PEER])
    await until_status(tmp_path, lambda s: s.reloads == 1)
    moved = msgspec.structs.replace(PEER, ip_address="10.0.0.22")
    await daemon.update_members([ME])
    await daemon.update_members([ME, moved])
    seen = await until_status(tmp_path, lambda s: s.reloads > 1)
    await daemon.stop()
    assert seen.members[daemon_name(UID, 1)] == "10.0.0.22"
    assert seen.reloads == 2


async def test_a_change_while_the_daemon_starts_is_not_signalled_before_it_is_ready(tmp_path: Path) -> None:
    states = States()
    daemon = make_daemon(tmp_path, states)
    await daemon.start([ME])
    await daemon.update_members([ME, PEER])
    await states.ready()
    seen = await until_status(tmp_path, lambda s: daemon_name(UID, 1) in s.members)
    await daemon.stop()
    assert seen.members[daemon_name(UID, 1)] == PEER.ip_address
    statuses = [state.status for state in states.seen]
    starting = statuses.index("Ready")  # a probe before the daemon answers says why it is not ready yet
    assert all("not ready" in state.reason for state in states.seen[:starting]), states.seen
    assert statuses[starting:] == ["Ready", "NotReady"], states.seen


async def test_a_killed_daemon_is_reported_and_restarted(running: tuple[ImexDaemon, States]) -> None:
    daemon, states = running
    pid = daemon.pid
    assert pid is not None
    os.kill(pid, 9)
    seen = len(states.seen)
    down = await states.not_ready()
    assert f"IMEX daemon (pid {pid}) was killed by SIGKILL" in down.reason
    await states.ready()
    assert daemon.pid not in (None, pid)
    restarting = [s.reason for s in states.seen[seen:] if s.status == "NotReady"]
    assert all("killed by SIGKILL" in reason for reason in restarting), restarting  # until the new one is ready


async def test_a_daemon_that_fails_is_reported_with_imexs_error_and_recovers(
    running: tuple[ImexDaemon, States], tmp_path: Path
) -> None:
    daemon, states = running
    fail = domain_files(tmp_path, UID).directory / FAIL_FILE
    fail.write_text("No matching network interface found for any IP addresses in the node configuration file\n")
    down = await states.not_ready()
    assert "exited with status 1: IMEX error: No matching network interface found" in down.reason
    fail.unlink()
    await states.ready()
    assert daemon.pid is not None


async def test_stop_leaves_no_process_behind(tmp_path: Path) -> None:
    states = States()
    daemon = make_daemon(tmp_path, states)
    await daemon.start([ME])
    await states.ready()
    pid = daemon.pid
    assert pid is not None
    await daemon.stop()
    assert gone(pid)
    assert states.seen[-1] == DaemonState(status="NotReady", reason="IMEX daemon stopped")
    assert status(tmp_path) is None, "the simulated daemon exits cleanly on SIGTERM"


async def test_a_daemon_that_ignores_sigterm_is_killed_after_the_grace(tmp_path: Path) -> None:
    stubborn = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(60)"
    )
    commands = ImexCommands(daemon=(sys.executable, "-c", stubborn), query=("echo", "READY"), simulated=True)
    states = States()
    daemon = make_daemon(tmp_path, states, commands, stop_grace=0.5)
    await daemon.start([ME])
    await states.ready()
    pid = daemon.pid
    assert pid is not None
    async with asyncio.timeout(BOUND):
        await daemon.stop()
    await until_gone(pid)


async def test_only_exactly_ready_is_ready(tmp_path: Path) -> None:
    probes = tmp_path / "probes"
    query = ("sh", "-c", f"echo probe >> {probes}; echo 'READY?'")
    sleeper = (sys.executable, "-c", "import time; time.sleep(60)")
    states = States()
    daemon = make_daemon(tmp_path, states, ImexCommands(daemon=sleeper, query=query, simulated=True))
    await daemon.start([ME])
    async with asyncio.timeout(BOUND):
        while not probes.exists() or len(probes.read_text().split()) < 3:  # noqa: ASYNC110 - a file: nothing to await
            await asyncio.sleep(0.05)
    await daemon.stop()
    assert [state.status for state in states.seen] == ["NotReady", "NotReady"]  # never Ready
    assert "not ready" in states.seen[0].reason
    assert "READY?" in states.seen[0].reason  # what it said, for the domain's status
    assert states.seen[1].reason == "IMEX daemon stopped"
