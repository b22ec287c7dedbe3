"""After ``gpudra up``, ``gpudra devices`` and ``gpudra slices`` show the simulated machine: the whole standalone
path (supervisor environment, discovery process, inventory bucket, standalone store, CLI) with nothing faked."""

from __future__ import annotations

import asyncio
import shutil
import signal
import sys
import tempfile
from pathlib import Path

import msgspec
import pytest
import yaml

pytestmark = pytest.mark.slow


async def gpudra(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cli", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )


async def wait_for_line(process: asyncio.subprocess.Process, marker: str, timeout: float = 90) -> None:
    assert process.stdout is not None
    seen: list[str] = []
    async with asyncio.timeout(timeout):
        while not seen or marker not in seen[-1]:
            line = await process.stdout.readline()
            if not line:
                raise AssertionError(f"gpudra up ended before {marker!r}: {seen}")
            seen.append(line.decode())


async def output_of(*args: str) -> str:
    process = await gpudra(*args)
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, out.decode()
    return out.decode()


async def test_up_gives_devices_and_slices_for_the_profile(tmp_path: Path) -> None:
    kubelet_dir = tempfile.mkdtemp(prefix="k", dir="/tmp")  # pytest's tmp_path is too deep for socket paths
    up = await gpudra("up", "--state-dir", str(tmp_path), "--kubelet-dir", kubelet_dir, "--profile", "dgx-h100")
    try:
        await wait_for_line(up, "Ctrl-C stops everything")
        devices_json, devices_table, slices_yaml = await asyncio.gather(
            output_of("devices", "--state-dir", str(tmp_path), "-o", "json"),
            output_of("devices", "--state-dir", str(tmp_path)),
            output_of("slices", "--state-dir", str(tmp_path)),
        )
    finally:
        if up.returncode is None:
            up.send_signal(signal.SIGINT)
            await asyncio.wait_for(up.wait(), 60)
        shutil.rmtree(kubelet_dir, ignore_errors=True)
    [inventory] = msgspec.json.decode(devices_json)
    assert (inventory["node"], len(inventory["gpus"])) == ("node-0", 8)
    assert devices_table.startswith("# node node-0: 8 GPUs, 0 MIG devices")
    [resource_slice] = yaml.safe_load(slices_yaml)["items"]
    assert len(resource_slice["spec"]["devices"]) == 8
    assert resource_slice["spec"]["nodeName"] == "node-0"
    log = (tmp_path / "logs" / "discovery.log").read_text()
    assert '"level":"ERROR"' not in log, log
