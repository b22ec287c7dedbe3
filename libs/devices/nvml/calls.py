"""Calling NVML: its errors become typed device errors that name the node, the device and the call."""

from collections.abc import Callable
from typing import Any

import pynvml

from libs.devices.errors import DeviceError, DeviceLost, NvmlError

# "This driver or GPU cannot answer that": an older driver lacks the function or the struct version.
ABSENT = frozenset(
    {
        pynvml.NVML_ERROR_NOT_SUPPORTED,
        pynvml.NVML_ERROR_FUNCTION_NOT_FOUND,
        pynvml.NVML_ERROR_ARGUMENT_VERSION_MISMATCH,
    }
)
NOT_FOUND = frozenset({pynvml.NVML_ERROR_NOT_FOUND, pynvml.NVML_ERROR_INVALID_ARGUMENT})
_LOST = frozenset({pynvml.NVML_ERROR_GPU_IS_LOST, pynvml.NVML_ERROR_GPU_NOT_FOUND})


def text(value: bytes | str) -> str:
    """NVML structs hold bytes; the wrapped functions already return str."""
    return value.decode() if isinstance(value, bytes) else value


def translate(node: str, device: str, call: str, error: pynvml.NVMLError) -> DeviceError:
    if error.value in _LOST:
        return DeviceLost(node, device)
    return NvmlError(node, device, call, str(error), error.value)


class Caller:
    """Calls NVML on behalf of one device, so every error names it."""

    def __init__(self, node: str, device: str) -> None:
        self.node = node
        self.device = device

    def __call__(self, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except pynvml.NVMLError as error:
            raise translate(self.node, self.device, fn.__name__, error) from error

    def optional(self, fn: Callable[..., Any], *args: Any, absent: frozenset[int] = ABSENT) -> Any:
        """None where NVML answers with one of the `absent` codes (by default: not supported here)."""
        try:
            return fn(*args)
        except pynvml.NVMLError as error:
            if error.value in absent:
                return None
            raise translate(self.node, self.device, fn.__name__, error) from error
