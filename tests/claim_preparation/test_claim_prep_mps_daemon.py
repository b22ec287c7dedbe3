"""The MPS control daemon is the driver root's: run from there, finding the root's server and libraries.

A node's claim-preparation container has no ``nvidia-cuda-mps-control`` of its own; the host's driver root,
mounted read-only, has the one of the kernel module's version. The daemon here is a stand-in script in a
simulated driver root that writes down how it was started and what it was told, which is what this module
controls; the GPU side of MPS is the device backend's.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from libs.devices.simulated import SimulatedBackend
from services.claim_preparation.cdi import driver_files
from services.claim_preparation.mps import (
    CONTROL,
    SERVER,
    MpsCommand,
    MpsError,
    NvidiaMpsDaemons,
    mps_command,
    report_mps,
)
from services.claim_preparation.record import MpsPlan
from tests.claim_preparation.claim_prep_support import PROFILE

LIBS = "usr/lib/x86_64-linux-gnu"
UUIDS = {"gpu-0": "GPU-0000", "gpu-1": "GPU-1111"}

# Writes how it ran to $STANDIN_CALLS: the environment the daemon and the server it starts would see, and each
# control command; creates the control socket as the real daemon does and removes it on quit.
STAND_IN = f"""#!/bin/sh
if [ -n "$STANDIN_FAIL" ]; then echo "$STANDIN_FAIL" >&2; exit 3; fi
if [ "$1" = "-d" ]; then
  {{
    echo "start"
    echo "path=$PATH"
    echo "libraries=$LD_LIBRARY_PATH"
    echo "devices=$CUDA_VISIBLE_DEVICES"
    echo "log=$CUDA_MPS_LOG_DIRECTORY"
    echo "server=$(command -v {SERVER})"
  }} >> "$STANDIN_CALLS"
  : > "$CUDA_MPS_PIPE_DIRECTORY/control"
  exit 0
fi
while read -r line; do
  echo "command $line" >> "$STANDIN_CALLS"
  if [ "$line" = quit ]; then rm -f "$CUDA_MPS_PIPE_DIRECTORY/control"; fi
done
"""


@pytest.fixture
async def mounted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The host's driver root as the DaemonSet mounts it, with the stand-in daemon; ``PATH`` has none."""
    root = tmp_path / "driver-root"
    await SimulatedBackend.open("node-a", root, PROFILE)
    (root / "usr/bin" / CONTROL).write_text(STAND_IN)
    monkeypatch.setenv("STANDIN_CALLS", str(tmp_path / "calls"))
    monkeypatch.setenv("PATH", f"/usr/bin{os.pathsep}/bin")
    monkeypatch.setenv("LD_LIBRARY_PATH", "/opt/image/lib")
    return root


def _plan(tmp_path: Path) -> MpsPlan:
    return MpsPlan(
        group="default",
        directory=str(tmp_path / "mps/claim-1/default"),
        devices=("gpu-0", "gpu-1"),
        minors=(0, 1),
        active_thread_percentage=50,
        pinned_limits={"gpu-1": 10 * 2**30},
    )


def _calls(tmp_path: Path) -> list[str]:
    return (tmp_path / "calls").read_text().splitlines()


async def test_the_daemon_runs_from_the_mounted_driver_root_with_its_server_and_libraries(
    tmp_path: Path, mounted: Path
) -> None:
    command = mps_command(driver_files("/", driver_mount=str(mounted)), str(mounted))
    assert command.control == f"{mounted}/usr/bin/{CONTROL}"
    daemons = NvidiaMpsDaemons(command)
    plan = _plan(tmp_path)
    await daemons.start(plan, UUIDS)
    assert Path(plan.pipe_dir, "control").exists()
    assert _calls(tmp_path) == [
        "start",
        f"path={mounted}/usr/bin{os.pathsep}/usr/bin{os.pathsep}/bin",
        f"libraries={mounted}/{LIBS}{os.pathsep}/opt/image/lib",
        "devices=GPU-0000,GPU-1111",
        f"log={plan.log_dir}",
        f"server={mounted}/usr/bin/{SERVER}",
        "command set_default_active_thread_percentage 50",
        "command set_default_device_pinned_mem_limit GPU-1111 10240M",
    ]

    await daemons.start(plan, UUIDS)  # a retried prepare finds it running
    assert _calls(tmp_path).count("start") == 1

    await daemons.stop(plan)
    assert _calls(tmp_path)[-1] == "command quit"
    assert not Path(plan.directory).exists()


async def test_on_the_hosts_own_root_the_loader_needs_no_library_folders(tmp_path: Path, mounted: Path) -> None:
    """A host install (``GPUDRA_DRIVER_ROOT=/`` read at ``/``): its libraries are where the loader looks."""
    files = driver_files("/", driver_mount=str(mounted))
    command = mps_command(files, "/")
    assert command == MpsCommand(control=f"/usr/bin/{CONTROL}", path_dirs=("/usr/bin",))
    assert command.environment({"LD_LIBRARY_PATH": "/x"})["LD_LIBRARY_PATH"] == "/x"


async def test_a_root_without_the_daemon_says_so_at_start_and_claims_fail_naming_it(
    tmp_path: Path, mounted: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (mounted / "usr/bin" / CONTROL).unlink()
    files = driver_files("/", driver_mount=str(mounted))
    command = mps_command(files, str(mounted))
    assert command == MpsCommand()
    with caplog.at_level(logging.INFO):
        report_mps(command, files)
    assert f"MPS: no {CONTROL} in driver root /" in caplog.text
    plan = _plan(tmp_path)
    with pytest.raises(MpsError, match=f"MPS daemon {plan.directory}: cannot run {CONTROL}"):
        await NvidiaMpsDaemons(command).start(plan, UUIDS)


async def test_a_daemon_that_fails_to_start_is_an_error_with_what_it_said(
    tmp_path: Path, mounted: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STANDIN_FAIL", "An instance of this daemon is already running")
    daemons = NvidiaMpsDaemons(mps_command(driver_files("/", driver_mount=str(mounted)), str(mounted)))
    with pytest.raises(MpsError, match="exited 3: An instance of this daemon is already running"):
        await daemons.start(_plan(tmp_path), UUIDS)


async def test_the_start_up_line_names_the_daemon_claims_will_run(
    mounted: Path, caplog: pytest.LogCaptureFixture
) -> None:
    files = driver_files("/", driver_mount=str(mounted))
    with caplog.at_level(logging.INFO):
        report_mps(mps_command(files, str(mounted)), files)
    assert f"MPS: control daemon {mounted}/usr/bin/{CONTROL}" in caplog.text
