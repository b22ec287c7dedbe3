"""A stand-in NVIDIA driver install in the simulated machine's directory, so its CDI specs have a GPU node's shape.

Claim preparation looks for the driver's files under a driver root, by default this directory on a simulated
node; laying out empty stand-ins of what the profile's driver version installs (the compute libraries with the
links ``ldconfig`` makes for the two every program loads, the tools, the GSP firmware, and a hook binary that
does nothing) gives specs the same mounts and hooks as on a GPU node, with ``hostPath`` here. Debian's x86_64
layout; creating is idempotent and safe against other processes doing it at the same time.
"""

import contextlib
import os
from pathlib import Path

from libs.cdi.driver import BINARIES, HOOK_TOOLS, LIBRARIES

LIB_DIR = "usr/lib/x86_64-linux-gnu"
BIN_DIR = "usr/bin"
FIRMWARE = ("gsp_ga10x.bin", "gsp_tu10x.bin")
SONAME_LINKED = ("libcuda", "libnvidia-ml")
_HOOK_SCRIPT = b"#!/bin/sh\n# gpudra's stand-in for the NVIDIA container toolkit's hook: nothing to do.\nexit 0\n"


def lay_out(root: Path, version: str) -> None:
    """Create what is missing of the stand-in install of driver ``version`` under ``root``."""
    libs, bins, firmware = root / LIB_DIR, root / BIN_DIR, root / "lib/firmware/nvidia" / version
    for folder in (libs, bins, firmware):
        folder.mkdir(parents=True, exist_ok=True)
    for name in LIBRARIES:
        _create(libs / f"{name}.so.{version}", 0o644)
    for name in SONAME_LINKED:
        with contextlib.suppress(FileExistsError):
            (libs / f"{name}.so.1").symlink_to(f"{name}.so.{version}")
    for name in BINARIES:
        _create(bins / name, 0o755)
    for name in FIRMWARE:
        _create(firmware / name, 0o644)
    _create(bins / HOOK_TOOLS[0][0], 0o755, _HOOK_SCRIPT)


def _create(path: Path, mode: int, content: bytes = b"") -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        return
    with os.fdopen(fd, "wb") as file:
        file.write(content)
