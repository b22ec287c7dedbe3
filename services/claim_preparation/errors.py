"""Why a claim cannot be prepared or unprepared, as types a caller can branch on and a person can act on.

The problems every driver shares (``ClaimProblem``, a bad reference, a claim not found or not usable, the API
away) are ``libs.claims.problems``; these are claim_preparation's own, for its devices, configs and files.
"""

from __future__ import annotations

from libs.claims.problems import ApiUnavailable, BadClaimRef, ClaimNotFound, ClaimNotUsable, ClaimProblem

__all__ = [
    "ApiUnavailable",
    "BadClaimRef",
    "CdiFailure",
    "CheckpointFailure",
    "ClaimNotFound",
    "ClaimNotUsable",
    "ClaimProblem",
    "ConfigError",
    "DeviceBusy",
    "DeviceFailure",
    "RollbackFailed",
    "ShareDoesNotFit",
    "UnknownDevice",
]


class ConfigError(ClaimProblem):
    """Opaque device configuration that is malformed, unknown, oversized, or does not fit the device."""


class UnknownDevice(ClaimProblem):
    """An allocated device that this node does not have."""


class DeviceBusy(ClaimProblem):
    """A device is already prepared for another claim."""


class ShareDoesNotFit(ClaimProblem):
    """A share of a GPU consumes more than the shares other claims hold leave of it."""


class DeviceFailure(ClaimProblem):
    """The device backend refused or failed an operation (MIG create, MPS, time-slicing)."""


class CdiFailure(ClaimProblem):
    """The CDI spec could not be written or removed."""


class CheckpointFailure(ClaimProblem):
    """The checkpoint could not be made durable; nothing is reported prepared without it."""


class RollbackFailed(ClaimProblem):
    """Undoing a half-prepared claim failed; it stays recorded and is retried."""
