"""Opening the device backend at start, with the setting to change when it cannot open (see startup.py)."""

from __future__ import annotations

from libs.devices import DeviceBackend, DeviceSettings, open_configured_backend
from libs.devices.errors import BackendUnavailable, DeviceError, ProfileError, StateError
from libs.runtime.startup import EXIT_DEVICES, StartupError


async def open_devices(settings: DeviceSettings) -> DeviceBackend:
    """The configured device backend, or a ``StartupError`` naming the setting that keeps it from opening."""
    try:
        return await open_configured_backend(settings)
    except BackendUnavailable as exc:
        raise StartupError(EXIT_DEVICES, f"{exc} (setting --backend / GPUDRA_BACKEND)") from exc
    except ProfileError as exc:
        raise StartupError(EXIT_DEVICES, f"{exc} (setting --profile / GPUDRA_PROFILE)") from exc
    except (StateError, DeviceError) as exc:
        raise StartupError(EXIT_DEVICES, f"{exc} (setting --simulated-dir / GPUDRA_SIMULATED_DIR)") from exc
