"""Hardware events as NVML reports them, one struct per NVML event type.

A tagged union (field `type`) so a consumer can `match` on the class and a JSON reader can tell them apart.
Both backends emit these; the health service turns them into its own fault events.
"""

import datetime as dt
import enum

import msgspec


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class XidEvent(msgspec.Struct, frozen=True, kw_only=True, tag="xid"):
    """NVML XID critical error (0x8); on a MIG device the GPU/compute instance ids say which one."""

    minor: int
    uuid: str
    xid: int
    gpu_instance_id: int | None = None
    compute_instance_id: int | None = None
    at: dt.datetime = msgspec.field(default_factory=utcnow)


class EccEvent(msgspec.Struct, frozen=True, kw_only=True, tag="ecc"):
    """NVML single-bit (0x1) or double-bit (0x2) ECC error event."""

    minor: int
    uuid: str
    double_bit: bool
    at: dt.datetime = msgspec.field(default_factory=utcnow)


class GpuLostEvent(msgspec.Struct, frozen=True, kw_only=True, tag="gpu-lost"):
    """NVML GPU unavailable (0x4000): the GPU stopped answering."""

    minor: int
    uuid: str
    at: dt.datetime = msgspec.field(default_factory=utcnow)


class RecoveryAction(enum.IntEnum):
    """NVML_GPU_RECOVERY_ACTION_*: what the driver says the GPU needs."""

    NONE = 0
    GPU_RESET = 1
    NODE_REBOOT = 2
    DRAIN_P2P = 3
    DRAIN_AND_RESET = 4


class RecoveryActionEvent(msgspec.Struct, frozen=True, kw_only=True, tag="recovery-action"):
    """NVML GPU recovery action (0x8000); `action` stays an int so a value newer than RecoveryAction survives
    decoding."""

    minor: int
    uuid: str
    action: int
    at: dt.datetime = msgspec.field(default_factory=utcnow)


DeviceEvent = XidEvent | EccEvent | GpuLostEvent | RecoveryActionEvent
