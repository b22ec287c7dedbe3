"""MPS control daemons, one per claim config group, each with its own pipe, shm and log directories.

A claim's containers talk to their daemon through the pipe directory (mounted at ``/tmp/nvidia-mps`` with
``CUDA_MPS_PIPE_DIRECTORY`` pointing there) and share memory through its shm directory (mounted at ``/dev/shm``),
so one claim's clients never reach another claim's daemon. The GPU side (exclusive-process compute mode) is
the device backend's ``start_mps``; this module runs the daemon.

- ``NvidiaMpsDaemons`` starts ``nvidia-cuda-mps-control -d`` limited to the group's devices and sets its
  defaults (active thread percentage, pinned memory per device); stopping sends ``quit``. It runs the driver
  root's daemon (``MpsCommand``): the service's image has none, and the daemon must be the kernel module's
  version. Its folder leads ``PATH`` so the control daemon starts the root's ``nvidia-cuda-mps-server``, and
  where the root is read under a mount its library folders lead ``LD_LIBRARY_PATH`` so the server loads the
  root's ``libcuda`` rather than none.
- ``RecordedMpsDaemons`` is the simulated node's: no process, the directories plus a ``daemon.json`` saying what
  would run, so tests and demos can see it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import posixpath
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

import msgspec

from libs.cdi.driver import DriverFiles, rooted
from services.claim_preparation.record import MpsPlan

log = logging.getLogger(__name__)

CONTROL = "nvidia-cuda-mps-control"
SERVER = "nvidia-cuda-mps-server"
RECORD = "daemon.json"
_DIR_MODE = 0o711  # clients (container users) traverse to the pipe; only the owner lists


class MpsError(Exception):
    """A daemon could not be started or stopped; the message names its directory."""


class MpsDaemons(Protocol):
    async def start(self, plan: MpsPlan, uuids: Mapping[str, str]) -> None:
        """Start the group's daemon for the devices (name -> UUID); starting a running one is not an error."""
        ...

    async def stop(self, plan: MpsPlan) -> None:
        """Stop it and remove its directories; stopping one that is gone is not an error."""
        ...


class DaemonRecord(msgspec.Struct, frozen=True, kw_only=True):
    """What ``daemon.json`` says a simulated daemon serves."""

    devices: dict[str, str]
    pipe_directory: str
    shm_directory: str
    active_thread_percentage: int | None
    pinned_limits: dict[str, int]


def _make_dirs(plan: MpsPlan) -> None:
    for directory in (plan.pipe_dir, plan.shm_dir, plan.log_dir):
        Path(directory).mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)


def _remove_dirs(plan: MpsPlan) -> None:
    shutil.rmtree(plan.directory, ignore_errors=True)
    claim_dir = Path(plan.directory).parent
    with contextlib.suppress(OSError):
        claim_dir.rmdir()  # the claim's directory, once its last group is gone


def _running(plan: MpsPlan) -> bool:
    """A daemon serving the pipe directory has created its control socket there."""
    return Path(plan.pipe_dir, "control").exists()


class RecordedMpsDaemons:
    async def start(self, plan: MpsPlan, uuids: Mapping[str, str]) -> None:
        record = DaemonRecord(
            devices=dict(uuids),
            pipe_directory=plan.pipe_dir,
            shm_directory=plan.shm_dir,
            active_thread_percentage=plan.active_thread_percentage,
            pinned_limits=dict(plan.pinned_limits),
        )
        await asyncio.to_thread(self._write, plan, msgspec.json.encode(record))

    @staticmethod
    def _write(plan: MpsPlan, data: bytes) -> None:
        _make_dirs(plan)
        Path(plan.directory, RECORD).write_bytes(data)

    async def stop(self, plan: MpsPlan) -> None:
        await asyncio.to_thread(_remove_dirs, plan)


def control_commands(plan: MpsPlan, uuids: Mapping[str, str]) -> list[str]:
    """What to tell a fresh daemon so every client gets the group's defaults (pure)."""
    commands = []
    if plan.active_thread_percentage is not None:
        commands.append(f"set_default_active_thread_percentage {plan.active_thread_percentage}")
    for device, limit in sorted(plan.pinned_limits.items()):
        commands.append(f"set_default_device_pinned_mem_limit {uuids[device]} {max(1, limit // 2**20)}M")
    return commands


class MpsCommand(msgspec.Struct, frozen=True, kw_only=True):
    """How this process runs the control daemon: which binary, and the folders put first in its search paths."""

    control: str = CONTROL
    path_dirs: tuple[str, ...] = ()
    library_dirs: tuple[str, ...] = ()

    def environment(self, base: Mapping[str, str]) -> dict[str, str]:
        """``base`` with this command's folders ahead of what its ``PATH`` and ``LD_LIBRARY_PATH`` hold."""
        env = dict(base)
        for name, folders in (("PATH", self.path_dirs), ("LD_LIBRARY_PATH", self.library_dirs)):
            if folders:
                env[name] = os.pathsep.join([*folders, *filter(None, [base.get(name, "")])])
        return env


def mps_command(files: DriverFiles, seen: str) -> MpsCommand:
    """The driver root's control daemon as this process reaches it (the root read at ``seen``); by name on
    ``PATH`` when the root has none. The host's own root needs no library folders: its loader finds them."""
    control = next((path for path in files.binaries if posixpath.basename(path) == CONTROL), None)
    if control is None:
        return MpsCommand()
    here = rooted(seen, control)
    libraries = (
        () if seen in ("", "/") else tuple(dict.fromkeys(posixpath.dirname(rooted(seen, p)) for p in files.libraries))
    )
    return MpsCommand(control=here, path_dirs=(posixpath.dirname(here),), library_dirs=libraries)


def report_mps(command: MpsCommand, files: DriverFiles) -> None:
    """One line on which daemon MPS claims get; a warning when the root lacks it, since they will then fail."""
    found = {posixpath.basename(path) for path in files.binaries}
    missing = [name for name in (CONTROL, SERVER) if name not in found]
    if not missing:
        log.info("MPS: control daemon %s", command.control, extra={"driver_root": files.root})
        return
    log.warning(
        "MPS: no %s in driver root %s; MPS claims run %s from PATH and fail where it has none",
        " or ".join(missing),
        files.root,
        CONTROL,
        extra={"driver_root": files.root},
    )


class NvidiaMpsDaemons:
    """Runs the real control daemon as ``command`` says (the driver root's, else the one on ``PATH``)."""

    def __init__(self, command: MpsCommand | None = None) -> None:
        self._command = command or MpsCommand()
        self._control = self._command.control

    def _env(self, plan: MpsPlan, uuids: Sequence[str] = ()) -> dict[str, str]:
        env = self._command.environment(os.environ)
        env.update(CUDA_MPS_PIPE_DIRECTORY=plan.pipe_dir, CUDA_MPS_LOG_DIRECTORY=plan.log_dir)
        if uuids:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(uuids)
        return env

    async def start(self, plan: MpsPlan, uuids: Mapping[str, str]) -> None:
        await asyncio.to_thread(_make_dirs, plan)
        if await asyncio.to_thread(_running, plan):
            return  # already running for this group (a retried prepare)
        await self._run(plan, ["-d"], b"", self._env(plan, [uuids[name] for name in plan.devices]))
        for command in control_commands(plan, uuids):
            await self._run(plan, [], command.encode() + b"\n", self._env(plan))

    async def stop(self, plan: MpsPlan) -> None:
        if await asyncio.to_thread(_running, plan):
            try:
                await self._run(plan, [], b"quit\n", self._env(plan))
            except MpsError as exc:
                log.warning("MPS daemon did not quit cleanly", extra={"directory": plan.directory, "error": str(exc)})
        await asyncio.to_thread(_remove_dirs, plan)

    async def _run(self, plan: MpsPlan, args: list[str], stdin: bytes, env: dict[str, str]) -> None:
        try:
            process = await asyncio.create_subprocess_exec(
                self._control,
                *args,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                env=env,
            )
        except OSError as exc:
            raise MpsError(f"MPS daemon {plan.directory}: cannot run {self._control}: {exc}") from exc
        output, _ = await process.communicate(stdin)
        if process.returncode != 0:
            text = output.decode(errors="replace").strip()[-300:]
            raise MpsError(f"MPS daemon {plan.directory}: {self._control} exited {process.returncode}: {text}")
