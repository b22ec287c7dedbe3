"""A driver upgraded under the running services that read GPUs: each ends, to be started again on it.

The rule is ``DriverWatch`` (pure); the processes are the real ``python -m services.<name>`` on a simulated node,
whose driver is the stand-in install in its directory: laying out a newer ``libcuda`` there is the upgrade.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from libs.cdi.driver import driver_version
from libs.devices.simulated import load_profile
from libs.devices.simulated.driver_root import LIB_DIR
from libs.natsserver import EmbeddedNats
from libs.runtime.driver_watch import DriverWatch
from libs.runtime.service import EXIT_BUS
from tests.support.nats_fixture import service_env

PROFILE = "dgx-h100"
UPGRADE = "999.1.2"
SERVICES = {
    "discovery": {"GPUDRA_KUBE_MODE": "local"},
    "claim_preparation": {"GPUDRA_KUBE_MODE": "local"},
    "health": {"GPUDRA_ROLE": "node"},
    "compute_domain": {"GPUDRA_ROLE": "node", "GPUDRA_KUBE_MODE": "local"},
}


def test_a_new_version_or_a_driver_that_came_back_means_a_restart_and_nothing_else_does() -> None:
    watch = DriverWatch("550.54.15")
    assert watch.check("550.54.15") is None
    assert watch.check("") is None, "unloaded: nothing to load yet"
    assert watch.check("550.54.15") == (
        "NVIDIA driver 550.54.15 went away and came back under this process; restarting to load it again"
    )
    assert DriverWatch("550.54.15").check("570.86.10") == (
        "NVIDIA driver 570.86.10 replaced 550.54.15 under this process; restarting to load it"
    )
    fresh = DriverWatch("")
    assert fresh.check("") is None
    assert fresh.check("570.86.10") == (
        "NVIDIA driver 570.86.10 replaced no driver under this process; restarting to load it"
    )


async def _ready(process: asyncio.subprocess.Process, lines: list[dict[str, Any]]) -> None:
    assert process.stdout is not None
    while True:
        line = await process.stdout.readline()
        assert line, f"exited before it was ready: {lines}"
        lines.append(json.loads(line))
        if lines[-1]["msg"] == "service ready":
            return


async def _rest(process: asyncio.subprocess.Process, lines: list[dict[str, Any]]) -> int:
    assert process.stdout is not None
    out, _ = await process.communicate()
    lines += [json.loads(line) for line in out.decode().splitlines() if line.startswith("{")]
    return process.returncode if process.returncode is not None else -1


@pytest.mark.slow
async def test_every_service_that_reads_gpus_ends_when_the_driver_is_upgraded_under_it(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    common = {
        "GPUDRA_BACKEND": "simulated",
        "GPUDRA_PROFILE": PROFILE,
        "GPUDRA_STATE_DIR": str(tmp_path / "state"),
        "GPUDRA_CDI_DIR": str(tmp_path / "cdi"),
        "GPUDRA_METRICS_PORT": "-1",
        "GPUDRA_LOG_FORMAT": "json",
        "GPUDRA_DRIVER_CHECK_SECONDS": "0.1",
    }
    processes = {}
    logs: dict[str, list[dict[str, Any]]] = {name: [] for name in SERVICES}
    for name, own in SERVICES.items():
        env = {**os.environ, **service_env(nats_server.url, "node-a", name), **common, **own}
        processes[name] = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            f"services.{name}",
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
    try:
        async with asyncio.timeout(60):
            await asyncio.gather(*(_ready(processes[name], logs[name]) for name in SERVICES))
        root = tmp_path / "state" / "simulated"
        installed = load_profile(PROFILE).driver_version
        assert driver_version(str(root)) == installed

        (root / LIB_DIR / f"libcuda.so.{UPGRADE}").touch()

        async with asyncio.timeout(30):
            codes = await asyncio.gather(*(_rest(processes[name], logs[name]) for name in SERVICES))
    finally:
        for process in processes.values():
            if process.returncode is None:
                process.kill()
                await process.wait()
    assert codes == [EXIT_BUS] * len(SERVICES)
    reason = f"NVIDIA driver {UPGRADE} replaced {installed} under this process; restarting to load it"
    for name in SERVICES:
        warned = [line for line in logs[name] if line["level"] == "WARNING" and line["msg"] == reason]
        assert warned, f"{name} did not say why: {logs[name][-5:]}"
        assert logs[name][-1]["msg"] == f"exiting, to be started again: {reason}", name
