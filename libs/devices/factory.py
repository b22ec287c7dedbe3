"""Choosing a device backend by name, as a service's settings or a CLI flag give it."""

from pathlib import Path
from typing import Literal

from libs.devices.backend import DeviceBackend
from libs.devices.errors import BackendUnavailable
from libs.devices.nvml import NvmlBackend
from libs.devices.settings import DeviceSettings
from libs.devices.simulated import SimulatedBackend

BackendKind = Literal["nvml", "simulated"]


async def open_backend(
    kind: BackendKind,
    node: str,
    state_dir: Path | str | None = None,
    profile: str | None = None,
    *,
    driver_root: str = "/",
) -> DeviceBackend:
    """`state_dir` and `profile` are the simulated backend's (the profile is needed only to create a machine);
    `driver_root`, where this process sees the NVIDIA driver's files, is NVML's."""
    if kind == "nvml":
        return await NvmlBackend.open(node, driver_root=driver_root)
    if kind == "simulated":
        if state_dir is None:
            raise BackendUnavailable(node, "simulated", "no state directory given", "pass one (e.g. --state-dir)")
        return await SimulatedBackend.open(node, state_dir, profile)
    raise BackendUnavailable(node, str(kind), "unknown backend", "use `nvml` or `simulated`")


async def open_configured_backend(settings: DeviceSettings) -> DeviceBackend:
    """The backend a service's settings ask for."""
    return await open_backend(
        settings.backend,
        settings.node_name,
        settings.simulated_state,
        settings.profile,
        driver_root=settings.driver_root_seen,
    )
