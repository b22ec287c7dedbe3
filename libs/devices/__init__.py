"""GPUs as plain data (model), the backend interface, and the NVML and simulated backends behind it."""

from libs.devices.backend import DeviceBackend
from libs.devices.factory import BackendKind, open_backend, open_configured_backend
from libs.devices.settings import DeviceSettings

__all__ = ["BackendKind", "DeviceBackend", "DeviceSettings", "open_backend", "open_configured_backend"]
