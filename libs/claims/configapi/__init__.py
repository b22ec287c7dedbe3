"""The opaque device configuration users write (API ``resource.gpudra.io/v1beta1``), and its strict decoding.

Kept apart from the code that applies it, as its own versioned API: a later ``v1`` adds a module and a
conversion, and claims written for ``v1beta1`` keep working.
"""

from libs.claims.configapi.channel import (
    CHANNEL_KIND,
    AllocationMode,
    ComputeDomainChannelConfig,
    ComputeDomainDriverSetting,
)
from libs.claims.configapi.decode import MAX_PARAMETERS_BYTES, DecodeProblem, decode_channel_config, decode_parameters
from libs.claims.configapi.quantity import QuantityError, parse_quantity
from libs.claims.configapi.v1beta1 import (
    API_VERSION,
    DEFAULT_GPU_CONFIG,
    DEFAULT_MIG_CONFIG,
    DeviceConfig,
    GpuConfig,
    GpuSharing,
    MigDeviceConfig,
    MigDeviceSharing,
    MpsConfig,
    TimeSlicingConfig,
)

__all__ = [
    "API_VERSION",
    "CHANNEL_KIND",
    "DEFAULT_GPU_CONFIG",
    "DEFAULT_MIG_CONFIG",
    "MAX_PARAMETERS_BYTES",
    "AllocationMode",
    "ComputeDomainChannelConfig",
    "ComputeDomainDriverSetting",
    "DecodeProblem",
    "DeviceConfig",
    "GpuConfig",
    "GpuSharing",
    "MigDeviceConfig",
    "MigDeviceSharing",
    "MpsConfig",
    "QuantityError",
    "TimeSlicingConfig",
    "decode_channel_config",
    "decode_parameters",
    "parse_quantity",
]
