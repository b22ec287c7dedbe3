"""``ImexDaemon``: one ComputeDomain's IMEX daemon on this node, kept running and probed.

The life of a daemon, as the reference driver's wrapper runs it, but from the node service instead of a pod:

1. ``start`` writes the domain's files (config, nodes, hosts; see ``imex_config``) and starts
   ``nvidia-imex -c <cfg>`` (the simulated daemon where the driver root has no IMEX), through ``libs.lifetime``
   so that it dies with the service even when the service is killed.
2. A probe runs ``nvidia-imex-ctl -c <cfg> -q`` every ``probe_interval``; exactly ``READY`` is ready. The state
   goes to ``on_state`` on each change: ``Ready``, or ``NotReady`` with a reason a person can act on.
3. ``update_members`` rewrites the hosts mapping and sends SIGUSR1 to a running daemon so it re-resolves its
   peers. IMEX honours one SIGUSR1 per 5 s, so changes within that window are coalesced into one signal sent
   when it ends. A daemon started after the change reads the new files and gets no signal; one not yet ready
   gets its signal once it is (a signal before IMEX handles it would kill it).
4. A daemon that exits unexpectedly is reported ``NotReady`` with its exit status and the last of its output,
   then restarted after a back-off that doubles up to ``max_backoff`` and starts over once a run got ready.
5. ``stop`` sends SIGTERM (IMEX tells its peers), waits ``stop_grace``, then SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import signal
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

import msgspec

from libs.cdi.driver import BIN_DIRS, rooted
from libs.events.catalogue.computedomains import Readiness
from libs.files import write_atomically
from libs.lifetime import bound_to_parent
from services.compute_domain.node.imex_config import (
    DomainFiles,
    Member,
    install_hosts_block,
    render_config,
    render_hosts,
    render_nodes,
)
from services.compute_domain.node.simulated_imex_ctl import query as simulated_query

log = logging.getLogger(__name__)

IMEX = "nvidia-imex"
IMEX_CTL = "nvidia-imex-ctl"
SIMULATED = "services.compute_domain.node.simulated_imex"
FIRST_PROBE_PAUSE = 0.05
OUTPUT_TAIL = 300


class DaemonState(msgspec.Struct, frozen=True, kw_only=True):
    """What the node reports for its daemon (``ComputeDomainNodeChanged.status`` and ``reason``)."""

    status: Readiness
    reason: str = ""


READY = DaemonState(status="Ready")


def not_ready(reason: str) -> DaemonState:
    return DaemonState(status="NotReady", reason=reason)


class DaemonTiming(msgspec.Struct, frozen=True, kw_only=True):
    """Intervals in seconds; tests shorten them."""

    reread_interval: float = 5.0
    probe_interval: float = 1.0
    query_timeout: float = 10.0
    first_backoff: float = 0.5
    max_backoff: float = 10.0
    stop_grace: float = 10.0


DEFAULT_TIMING = DaemonTiming()


class ImexCommands(msgspec.Struct, frozen=True, kw_only=True):
    """How to start and query one domain's daemon: the driver's tools, or the simulated stand-ins."""

    daemon: tuple[str, ...]
    query: tuple[str, ...]
    """Empty: ask the simulated daemon in-process (``simulated_imex_ctl.query``), as its ctl would, without a
    Python start per probe (65 ms of CPU each; nvidia-imex-ctl is a small C program)."""
    simulated: bool


def imex_commands(driver_root: str, files: DomainFiles) -> ImexCommands:
    """The real ``nvidia-imex`` and ``nvidia-imex-ctl`` when the driver root (as this process sees it) has
    both, else the simulated ones, which read the domain's hosts file as IMEX reads ``/etc/hosts``."""
    config = str(files.config)
    imex, ctl = _binary(driver_root, IMEX), _binary(driver_root, IMEX_CTL)
    if imex and ctl:
        return ImexCommands(daemon=(imex, "-c", config), query=(ctl, "-c", config, "-q"), simulated=False)
    python = sys.executable
    return ImexCommands(
        daemon=(python, "-m", SIMULATED, "--config", config, "--hosts", str(files.hosts)), query=(), simulated=True
    )


def _binary(driver_root: str, name: str) -> str | None:
    found = (rooted(driver_root, f"{folder}/{name}") for folder in BIN_DIRS)
    return next((path for path in found if os.access(path, os.X_OK)), None)


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        return f"was killed by {signal.Signals(-returncode).name}"
    return f"exited with status {returncode}"


def _output_since(path: Path, offset: int) -> str:
    """The end of what the daemon wrote after ``offset``, on one line."""
    with contextlib.suppress(OSError), path.open("rb") as file:
        file.seek(max(offset, file.seek(0, os.SEEK_END) - OUTPUT_TAIL))
        return "; ".join(line.strip() for line in file.read().decode(errors="replace").splitlines() if line.strip())
    return ""


class ImexDaemon:
    """One domain's IMEX daemon on this node; ``start`` once, ``update_members`` any time, ``stop`` once."""

    def __init__(
        self,
        *,
        domain_uid: str,
        node: str,
        files: DomainFiles,
        bind_ip: str,
        commands: ImexCommands,
        on_state: Callable[[DaemonState], None],
        system_hosts: Path | None = None,
        timing: DaemonTiming = DEFAULT_TIMING,
    ) -> None:
        """``system_hosts``: the resolver's hosts file to keep the domain's block in (``/etc/hosts`` with the
        real IMEX); None when nothing resolves through it (the simulated daemon reads ``files.hosts``)."""
        self._uid, self._node, self._files, self._bind_ip = domain_uid, node, files, bind_ip
        self._commands, self._on_state, self._system_hosts, self._timing = commands, on_state, system_hosts, timing
        self._log = {"domain": domain_uid, "node": node}
        self._state: DaemonState | None = None
        self._hosts = ""
        self._hosts_lock = asyncio.Lock()
        self._members_version = 0
        self._process: asyncio.subprocess.Process | None = None
        self._process_version = 0  # the membership the running process has read
        self._process_ready = False
        self._last_exit = ""
        """Why the previous run ended, until the next one is ready: what a restarting daemon's status shows."""
        self._last_signal = -math.inf
        self._reread = asyncio.Event()
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def state(self) -> DaemonState | None:
        return self._state

    @property
    def pid(self) -> int | None:
        """The running daemon's process id (tests and diagnostics)."""
        process = self._process
        return process.pid if process and process.returncode is None else None

    async def start(self, members: Iterable[Member] = ()) -> None:
        """Write the domain's files and start supervising the daemon (invalid members raise, nothing written)."""
        hosts = render_hosts(self._uid, members)
        config = render_config(self._files, self._bind_ip)
        await asyncio.to_thread(self._write_files, config, hosts)
        self._hosts = hosts
        self._tasks = [asyncio.create_task(self._supervise()), asyncio.create_task(self._signal_rereads())]
        log.info("IMEX daemon starting", extra={**self._log, "simulated": self._commands.simulated})

    async def update_members(self, members: Iterable[Member]) -> None:
        """Point the daemon's names at the clique's current members; a running daemon re-resolves them."""
        hosts = render_hosts(self._uid, members)
        async with self._hosts_lock:
            if hosts == self._hosts:
                return
            await asyncio.to_thread(self._write_hosts, hosts)
            self._hosts = hosts
            self._members_version += 1
        self._reread.set()
        log.info("IMEX membership changed", extra={**self._log, "version": self._members_version})

    async def stop(self) -> None:
        """Stop the daemon (SIGTERM, then SIGKILL after ``stop_grace``) and remove the domain's hosts block."""
        self._stop.set()
        for task in self._tasks[1:]:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._system_hosts is not None:
            await asyncio.to_thread(install_hosts_block, self._system_hosts, self._uid, "")
        self._report(not_ready("IMEX daemon stopped"))
        log.info("IMEX daemon stopped", extra=self._log)

    def _write_files(self, config: str, hosts: str) -> None:
        self._files.directory.mkdir(mode=0o755, parents=True, exist_ok=True)
        write_atomically(self._files.config, config.encode(), mode=0o644)
        write_atomically(self._files.nodes, render_nodes(self._uid).encode(), mode=0o644)
        self._write_hosts(hosts)

    def _write_hosts(self, hosts: str) -> None:
        write_atomically(self._files.hosts, hosts.encode(), mode=0o644)
        if self._system_hosts is not None:
            install_hosts_block(self._system_hosts, self._uid, hosts)

    def _report(self, state: DaemonState) -> None:
        if state != self._state:
            self._state = state
            self._on_state(state)

    async def _supervise(self) -> None:
        """Run the daemon until ``stop``, restarting it after each unexpected exit."""
        backoff = self._timing.first_backoff
        while True:
            reason = await self._run_once()
            if self._stop.is_set():
                return
            log.warning("IMEX daemon is down; restarting", extra={**self._log, "reason": reason, "delay": backoff})
            self._report(not_ready(reason))
            self._last_exit = reason
            if self._process_ready:
                backoff = self._timing.first_backoff
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), backoff)
                return
            backoff = min(backoff * 2, self._timing.max_backoff)

    async def _run_once(self) -> str:
        """Start the daemon and probe it until it exits (then: why) or ``stop`` is asked (then: it is stopped)."""
        offset = await asyncio.to_thread(lambda: self._files.log.stat().st_size if self._files.log.exists() else 0)
        try:
            process = await self._spawn()
        except OSError as exc:
            return f"cannot start the IMEX daemon {self._commands.daemon[0]}: {exc}"
        self._process, self._process_version, self._process_ready = process, self._members_version, False
        log.info("IMEX daemon started", extra={**self._log, "pid": process.pid})
        probe = asyncio.create_task(self._probe(process))
        try:
            exited = await self._exited_before_stop(process)
        finally:
            probe.cancel()
        if not exited:
            await self._terminate(process)
            return "stopped"
        output = await asyncio.to_thread(_output_since, self._files.log, offset)
        assert process.returncode is not None
        reason = f"IMEX daemon (pid {process.pid}) {describe_exit(process.returncode)}"
        return f"{reason}: {output}" if output else reason

    async def _spawn(self) -> asyncio.subprocess.Process:
        fd = await asyncio.to_thread(os.open, self._files.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            return await asyncio.create_subprocess_exec(
                *bound_to_parent(self._commands.daemon),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=fd,
                stderr=fd,
                start_new_session=True,  # a terminal's Ctrl-C reaches the service, which stops IMEX itself
            )
        finally:
            os.close(fd)

    async def _exited_before_stop(self, process: asyncio.subprocess.Process) -> bool:
        exited = asyncio.create_task(process.wait())
        stopping = asyncio.create_task(self._stop.wait())
        try:
            await asyncio.wait({exited, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            exited.cancel()
            stopping.cancel()
        return process.returncode is not None and not self._stop.is_set()

    async def _terminate(self, process: asyncio.subprocess.Process) -> None:
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        try:
            await asyncio.wait_for(process.wait(), self._timing.stop_grace)
        except TimeoutError:
            log.warning("IMEX daemon ignored SIGTERM; killing it", extra={**self._log, "pid": process.pid})
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()

    async def _probe(self, process: asyncio.subprocess.Process) -> None:
        """Probes quickly while the daemon starts (from 50 ms, doubling), then every ``probe_interval``."""
        pause = min(FIRST_PROBE_PAUSE, self._timing.probe_interval)
        while process.returncode is None:
            problem = await self._query()
            if problem is None:
                if not self._process_ready:
                    self._process_ready = True
                    self._last_exit = ""
                    self._reread.set()  # membership changes made while it started
                self._report(READY)
            else:  # starting, or no longer ready: either way the domain shows why (and why it restarted)
                after = f" (restarted: {self._last_exit})" if self._last_exit and not self._process_ready else ""
                self._report(not_ready(f"IMEX daemon (pid {process.pid}) not ready: {problem}{after}"))
            await asyncio.sleep(self._timing.probe_interval if self._process_ready else pause)
            pause = min(pause * 2, self._timing.probe_interval)

    async def _query(self) -> str | None:
        """None when the daemon answers exactly ``READY``, else what it said."""
        argv = self._commands.query
        if not argv:
            return await asyncio.to_thread(simulated_query, self._files.config)
        try:
            process = await asyncio.create_subprocess_exec(
                *bound_to_parent(argv),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
        except OSError as exc:
            return f"cannot run {argv[0]}: {exc}"
        try:
            output, _ = await asyncio.wait_for(process.communicate(), self._timing.query_timeout)
        except TimeoutError:
            process.kill()
            await process.wait()
            return f"{argv[0]} -q did not answer within {self._timing.query_timeout} s"
        except asyncio.CancelledError:  # stopping: no query outlives the daemon's supervision
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            raise
        text = output.decode(errors="replace")
        if process.returncode == 0 and text == "READY\n":
            return None
        return f"{argv[0]} -q {describe_exit(process.returncode or 0)}: {text.strip()[-OUTPUT_TAIL:]}"

    async def _signal_rereads(self) -> None:
        """Send SIGUSR1 for membership changes the running daemon has not read, at most once per interval."""
        loop = asyncio.get_running_loop()
        while True:
            await self._reread.wait()
            await asyncio.sleep(max(0.0, self._last_signal + self._timing.reread_interval - loop.time()))
            self._reread.clear()
            process, version = self._process, self._members_version
            if process is None or process.returncode is not None or not self._process_ready:
                continue  # a new process reads the files; a starting one is signalled once ready
            if self._process_version >= version:
                continue
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGUSR1)
            self._process_version, self._last_signal = version, loop.time()
            log.info("IMEX daemon told to re-read its peers", extra={**self._log, "pid": process.pid})
