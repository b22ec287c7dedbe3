"""MPS control daemons, one per claim config group, each with its own pipe, shm and log directories.

A claim's containers talk to their daemon through the pipe directory (mounted at ``/tmp/nvidia-mps`` with
``CUDA_MPS_PIPE_DIRECTORY`` pointing there) and share memory through its shm directory (mounted at ``/dev/shm``),
so one claim's clients never reach another claim's daemon. The GPU side (exclusive-process compute mode) is
the device backend's ``start_mps``; this module runs the daemon.

- ``NvidiaMpsDaemons`` starts ``nvidia-cuda-mps-control -d`` limited to the group's devices and sets its
  defaults (active thread percentage, pinned memory per device); stopping sends ``quit``.
- ``RecordedMpsDaemons`` is the simulated node's: no process, the directories plus a ``daemon.json`` saying what
  would run, so tests and demos can see it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

import msgspec

from services.claim_preparation.record import MpsPlan

log = logging.getLogger(__name__)

CONTROL = "nvidia-cuda-mps-control"
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


class NvidiaMpsDaemons:
    """Runs the real control daemon (``nvidia-cuda-mps-control`` must be on PATH)."""

    def __init__(self, control: str = CONTROL) -> None:
        self._control = control

    def _env(self, plan: MpsPlan, uuids: Sequence[str] = ()) -> dict[str, str]:
        env = dict(os.environ, CUDA_MPS_PIPE_DIRECTORY=plan.pipe_dir, CUDA_MPS_LOG_DIRECTORY=plan.log_dir)
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
