"""GPUs as plain data (model), the backend interface, and the NVML and simulated backends behind it."""

from libs.devices.backend import DeviceBackend
from libs.devices.factory import BackendKind, open_backend

__all__ = ["BackendKind", "DeviceBackend", "open_backend"]
