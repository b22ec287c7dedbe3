"""``gpudra up`` as a person runs it, for the standalone tests: started, read until ready, stopped with Ctrl-C."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

from cli import endpoints

System = tuple[asyncio.subprocess.Process, endpoints.Endpoints]


async def gpudra(*args: str, env: Mapping[str, str] | None = None) -> asyncio.subprocess.Process:
    """``gpudra ARGS...``; ``env`` adds to this process's environment (settings as an operator sets them)."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cli",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, **(env or {})},
    )


async def cli(*args: str, expect: int = 0) -> str:
    """``gpudra ARGS...`` run to its end: its output, once its exit code is checked."""
    process = await gpudra(*args)
    out, _ = await process.communicate()
    assert process.returncode == expect, out.decode()
    return out.decode()


async def read_until(process: asyncio.subprocess.Process, marker: str, timeout: float = 90) -> list[str]:
    assert process.stdout is not None
    lines: list[str] = []
    async with asyncio.timeout(timeout):
        while not lines or marker not in lines[-1]:
            line = await process.stdout.readline()
            if not line:
                raise AssertionError(f"process ended before {marker!r}: {lines}")
            lines.append(line.decode())
    return lines


@asynccontextmanager
async def running_up(state_dir: Path, *flags: str, env: Mapping[str, str] | None = None) -> AsyncIterator[System]:
    """``gpudra up --state-dir STATE_DIR FLAGS...`` until the block exits, then Ctrl-C and its exit awaited."""
    kubelet_dir = tempfile.mkdtemp(prefix="k", dir="/tmp")  # pytest's tmp_path is too deep for socket paths
    process = await gpudra("up", "--state-dir", str(state_dir), "--kubelet-dir", kubelet_dir, *flags, env=env)
    try:
        await read_until(process, "Ctrl-C stops everything")
        yield process, endpoints.read(state_dir)
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGINT)
            await asyncio.wait_for(process.wait(), 60)
        shutil.rmtree(kubelet_dir, ignore_errors=True)
