"""NVIDIA GPUs through NVML (PyPI `nvidia-ml-py`, module `pynvml`)."""

from libs.devices.nvml.backend import NvmlBackend

__all__ = ["NvmlBackend"]
