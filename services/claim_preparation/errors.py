"""Why a claim cannot be prepared or unprepared, as types a caller can branch on and a person can act on.

Pure rule modules raise a ``ClaimProblem`` that says what is wrong without knowing which claim it is; the
preparer prefixes the claim (``claim default/train-0 (uid …): device gpu-3 is already prepared for claim
default/eval-1``), which becomes the per-claim error the kubelet shows and the ``ClaimFailed`` event carries.
``reason`` (the class name) labels metrics and events.
"""

from __future__ import annotations


class ClaimProblem(Exception):
    """Base of every per-claim failure."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem

    @property
    def reason(self) -> str:
        return type(self).__name__


class BadClaimRef(ClaimProblem):
    """The kubelet's namespace/name/uid cannot be used (empty, path-like)."""


class ClaimNotFound(ClaimProblem):
    """The ResourceClaim does not exist, or exists under another UID (deleted and recreated)."""


class ClaimNotUsable(ClaimProblem):
    """The claim is not allocated, or not to this node and driver."""


class ApiUnavailable(ClaimProblem):
    """The Kubernetes API (or the standalone store) could not be read; the kubelet retries."""


class ConfigError(ClaimProblem):
    """Opaque device configuration that is malformed, unknown, oversized, or does not fit the device."""


class UnknownDevice(ClaimProblem):
    """An allocated device that this node does not have."""


class DeviceBusy(ClaimProblem):
    """A device is already prepared for another claim."""


class DeviceFailure(ClaimProblem):
    """The device backend refused or failed an operation (MIG create, MPS, time-slicing)."""


class CdiFailure(ClaimProblem):
    """The CDI spec could not be written or removed."""


class CheckpointFailure(ClaimProblem):
    """The checkpoint could not be made durable; nothing is reported prepared without it."""


class RollbackFailed(ClaimProblem):
    """Undoing a half-prepared claim failed; it stays recorded and is retried."""
