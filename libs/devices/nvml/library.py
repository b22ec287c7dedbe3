"""NVML and ``nvidia-smi`` from the driver root, so a service in a container uses the host's driver.

pynvml opens ``libnvidia-ml.so.1`` by name, which in a container finds only what the image or the NVIDIA
container toolkit's hook put there, if anything. The host's driver root is mounted into the container instead
(``DeviceSettings.driver_root_mount``), and its library is loaded first by path with ``RTLD_GLOBAL``: the dynamic
loader then answers pynvml's later open by name with the object already loaded under that soname, so every NVML
call goes to the host's library, of the kernel module's version. ``nvidia-smi`` (time slices, GPU reset) is the
root's too, run with the same library preloaded because its own open by name would not find it, as the reference
driver does. Where the root has no library (a host whose driver is elsewhere, the loader's search path knows it)
the default open by name is kept, and the start-up log says which one was used.
"""

from __future__ import annotations

import ctypes
import logging
import os

import msgspec

from libs.cdi.driver import BIN_DIRS, LIB_DIRS, locate

NVML_SONAME = "libnvidia-ml.so.1"
NVIDIA_SMI = "nvidia-smi"

log = logging.getLogger(__name__)


class NvmlLibrary(msgspec.Struct, frozen=True, kw_only=True):
    """The NVML library and ``nvidia-smi`` found under a driver root; empty: the default ones, by name."""

    path: str = ""
    nvidia_smi: str = ""

    def smi_command(self) -> tuple[str, dict[str, str] | None]:
        """How to run ``nvidia-smi``: the root's or the one on ``PATH``, with this library preloaded if found."""
        env = {**os.environ, "LD_PRELOAD": self.path} if self.path else None
        return self.nvidia_smi or NVIDIA_SMI, env


def find_nvml(root: str) -> NvmlLibrary:
    """NVML and ``nvidia-smi`` where this process sees the driver ``root``, in the folders CDI specs mount from."""
    library, nvidia_smi = locate(root, LIB_DIRS, NVML_SONAME), locate(root, BIN_DIRS, NVIDIA_SMI)
    return NvmlLibrary(path=library or "", nvidia_smi=nvidia_smi or "")


def load_nvml(root: str) -> NvmlLibrary:
    """Preloads the root's NVML library for pynvml; what was found, or nothing where the default is used."""
    found = find_nvml(root)
    if not found.path:
        log.info("NVML: %s by name (none in %s under driver root %s)", NVML_SONAME, ", ".join(LIB_DIRS), root)
        return NvmlLibrary()
    try:
        ctypes.CDLL(found.path, mode=ctypes.RTLD_GLOBAL)
    except OSError as error:
        log.warning("NVML: %s cannot be loaded (%s); %s by name instead", found.path, error, NVML_SONAME)
        return NvmlLibrary()
    log.info("NVML: %s; nvidia-smi: %s", found.path, found.nvidia_smi or f"{NVIDIA_SMI} on PATH")
    return found
