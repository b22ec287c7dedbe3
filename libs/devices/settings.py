"""Settings of every service that reads GPUs (discovery, claim_preparation, health): one name, one meaning.

Standalone mode gives every service one environment, so the services must agree on the machine (``backend``,
``profile``, ``simulated_dir``) and on where the NVIDIA driver is. The driver has two paths because a service
in a container does not see the host's file system at its own paths: ``driver_root`` is where the driver is on
the host, which is what CDI specs must name (the container runtime reads them there), and ``driver_root_mount``
is where the service sees that same directory, a read-only mount of it in the DaemonSet. NVML and
``nvidia-smi`` are taken from the mount (``libs.devices.nvml.library``), so the service uses the driver that
matches the host's kernel module rather than whatever its image or a runtime hook provides.

msgspec structs take fields from one base only, so this is the base of those services' settings, between
``CommonSettings`` and their own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import msgspec

from libs.settings import CommonSettings


def _doc(text: str) -> msgspec.Meta:
    return msgspec.Meta(description=text)


class DeviceSettings(CommonSettings, kw_only=True, frozen=True):
    """The device backend and the driver's whereabouts; services that read GPUs subclass this."""

    backend: Annotated[Literal["nvml", "simulated"], _doc("device backend")] = "nvml"
    profile: Annotated[str, _doc("simulated machine profile or YAML file")] = "dgx-h100"
    simulated_dir: Annotated[str, _doc("state directory of the simulated GPUs (default <state-dir>/simulated)")] = ""
    driver_root: Annotated[
        str,
        _doc(
            "host directory the NVIDIA driver's libraries, tools and firmware are installed under, as CDI specs name "
            "it: / for NVML (default), the simulated machine's stand-ins otherwise"
        ),
    ] = ""
    driver_root_mount: Annotated[
        str,
        _doc(
            "where this service sees the driver root (a read-only mount of the host's in a container); NVML, "
            "nvidia-smi and the files CDI specs mount are read there; empty: the driver root itself"
        ),
    ] = ""

    driver_check_seconds: Annotated[
        float,
        _doc(
            "how often the NVIDIA driver's version is read; a new driver (installed, upgraded) restarts the service "
            "to load it; 0: never"
        ),
        msgspec.Meta(ge=0, le=3600),
    ] = 10.0

    @property
    def simulated_state(self) -> Path:
        """The simulated machine's directory: one per node, beside the node's other local state."""
        return Path(self.simulated_dir) if self.simulated_dir else Path(self.state_dir) / "simulated"

    def host_root(self, value: str) -> str:
        """``value``, else the host's root for NVML and the simulated machine's directory, which has stand-ins."""
        if value:
            return value
        return str(self.simulated_state.absolute()) if self.backend == "simulated" else "/"

    @property
    def driver_root_path(self) -> str:
        """The driver root on the host."""
        return self.host_root(self.driver_root)

    @property
    def driver_root_seen(self) -> str:
        """Where this process reads the driver root."""
        return self.driver_root_mount or self.driver_root_path
