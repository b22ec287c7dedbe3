"""The opaque configuration users write, API ``resource.gpudra.io/v1beta1``: ``GpuConfig``, ``MigDeviceConfig``.

Put in a DeviceClass's or a ResourceClaim's ``config[].opaque.parameters`` for driver ``gpu.gpudra.io``::

    apiVersion: resource.gpudra.io/v1beta1
    kind: GpuConfig
    sharing:
      strategy: MPS                      # or TimeSlicing
      mpsConfig:
        defaultActiveThreadPercentage: 50
        defaultPinnedDeviceMemoryLimit: 10Gi
        defaultPerDevicePinnedMemoryLimit: {"0": 5Gi}   # by index in the claim's devices, or by UUID
      # timeSlicingConfig: {interval: Default | Short | Medium | Long}   (TimeSlicing, full GPUs only)

The shape is the reference driver's, so existing claims carry over with only the apiVersion changed. Unknown
fields are an error (the structs forbid them), which catches a misspelt field instead of silently ignoring it.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from libs.devices.model import TimeSliceInterval

GROUP = "resource.gpudra.io"
VERSION = "v1beta1"
API_VERSION = f"{GROUP}/{VERSION}"

Strategy = Literal["TimeSlicing", "MPS"]
Quantity = str | int
Percentage = Annotated[int, msgspec.Meta(ge=0, le=100)]


class _Api(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, rename="camel"):
    """camelCase JSON names, unknown fields refused."""


class TimeSlicingConfig(_Api, frozen=True, kw_only=True):
    interval: TimeSliceInterval = TimeSliceInterval.DEFAULT


class MpsConfig(_Api, frozen=True, kw_only=True):
    default_active_thread_percentage: Percentage | None = None
    default_pinned_device_memory_limit: Quantity | None = None
    default_per_device_pinned_memory_limit: dict[str, Quantity] = {}


class GpuSharing(_Api, frozen=True, kw_only=True):
    strategy: Strategy
    time_slicing_config: TimeSlicingConfig | None = None
    mps_config: MpsConfig | None = None


class MigDeviceSharing(_Api, frozen=True, kw_only=True):
    """MIG devices are time-sliced by the hardware already: no interval to set, only MPS has settings."""

    strategy: Strategy
    mps_config: MpsConfig | None = None


class GpuConfig(_Api, frozen=True, kw_only=True, tag_field="kind", tag="GpuConfig"):
    api_version: str = API_VERSION
    sharing: GpuSharing | None = None


class MigDeviceConfig(_Api, frozen=True, kw_only=True, tag_field="kind", tag="MigDeviceConfig"):
    api_version: str = API_VERSION
    sharing: MigDeviceSharing | None = None


DeviceConfig = GpuConfig | MigDeviceConfig
KINDS: dict[str, type[GpuConfig] | type[MigDeviceConfig]] = {"GpuConfig": GpuConfig, "MigDeviceConfig": MigDeviceConfig}

DEFAULT_GPU_CONFIG = GpuConfig()
"""Lowest precedence for a full GPU: no sharing settings (the GPU is the claim's alone)."""
DEFAULT_MIG_CONFIG = MigDeviceConfig()


def sharing_problems(sharing: GpuSharing | MigDeviceSharing | None) -> list[str]:
    """A settings block that does not belong to the chosen strategy is a mistake worth reporting."""
    if sharing is None:
        return []
    problems = []
    if sharing.strategy != "MPS" and sharing.mps_config is not None:
        problems.append(f"sharing.mpsConfig is set but sharing.strategy is {sharing.strategy}")
    if (
        isinstance(sharing, GpuSharing)
        and sharing.strategy != "TimeSlicing"
        and sharing.time_slicing_config is not None
    ):
        problems.append(f"sharing.timeSlicingConfig is set but sharing.strategy is {sharing.strategy}")
    return problems
