"""Why a claim cannot be prepared, as types a caller can branch on and a person can act on: the problems every
driver's node service shares (the claim reference, the claim in the API, its allocation).

Pure rule modules raise a ``ClaimProblem`` that says what is wrong without knowing which claim it is; the
service prefixes the claim (``claim default/train-0 (uid …): …``), which becomes the per-claim error the
kubelet shows. ``reason`` (the class name) labels metrics and events.
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
