"""Claim preparation: the kubelet's two calls as commands, and their outcomes as events."""

from __future__ import annotations

import re
from typing import Literal

import msgspec

from libs.events.base import Command, Event, Reply


class ClaimRef(msgspec.Struct, frozen=True, kw_only=True):
    """What the kubelet tells us about a claim; the rest is read from the API server."""

    namespace: str
    name: str
    uid: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name} (uid {self.uid})"


MAX_UID_LENGTH = 128
_SAFE_UID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def uid_problem(uid: str) -> str | None:
    """Why ``uid`` cannot be a claim UID here, or None. The UID names the claim's CDI spec and checkpoint file,
    so the shim refuses a bad one before forwarding it, and claim_preparation again before any file is named."""
    if not uid:
        return "the claim UID is empty"
    if "/" in uid or ".." in uid:
        return f"the claim UID {uid[:80]!r} is path-like ('/' or '..'); it would name a file elsewhere"
    if len(uid) > MAX_UID_LENGTH:
        return f"the claim UID is {len(uid)} characters long, over {MAX_UID_LENGTH}"
    if not _SAFE_UID.fullmatch(uid):
        return f"the claim UID {uid!r} may hold only letters, digits, '.', '_' and '-', starting with a letter or digit"
    return None


class PreparedDevice(msgspec.Struct, frozen=True, kw_only=True):
    request_names: list[str]
    pool: str
    device: str
    cdi_device_ids: list[str]
    share_id: str | None = None


Timings = dict[str, float]
"""Milliseconds per phase (lookup, config, wait, checkpoint, apply, cdi, total)."""


class ClaimPrepared(Event, frozen=True, kw_only=True):
    domain = "claims"
    topic = "prepared"
    summary = "A claim's devices are ready for its containers (CDI spec written, checkpoint durable)."

    claim: ClaimRef
    devices: list[PreparedDevice]
    timings_ms: Timings = msgspec.field(default_factory=dict)

    def ce_subject(self) -> str:
        return self.claim.uid


class ClaimUnprepared(Event, frozen=True, kw_only=True):
    domain = "claims"
    topic = "unprepared"
    summary = "A claim's devices were released and its CDI spec removed."

    claim: ClaimRef
    timings_ms: Timings = msgspec.field(default_factory=dict)

    def ce_subject(self) -> str:
        return self.claim.uid


class ClaimFailed(Event, frozen=True, kw_only=True):
    domain = "claims"
    topic = "failed"
    summary = "Preparing or unpreparing a claim failed; the kubelet will retry."

    claim: ClaimRef
    operation: Literal["prepare", "unprepare"]
    error: str
    timings_ms: Timings = msgspec.field(default_factory=dict)
    reason: str = ""
    """What kind of failure (ClaimNotFound, ConfigError, UnknownDevice, DeviceBusy, DeviceFailure...), to count on."""

    def ce_subject(self) -> str:
        return self.claim.uid


class ClaimPrepareResult(msgspec.Struct, frozen=True, kw_only=True):
    devices: list[PreparedDevice] = msgspec.field(default_factory=list)
    error: str = ""


class ClaimUnprepareResult(msgspec.Struct, frozen=True, kw_only=True):
    error: str = ""


class PrepareClaimsReply(Reply, frozen=True, kw_only=True):
    results: dict[str, ClaimPrepareResult]


class PrepareClaims(Command, frozen=True, kw_only=True):
    service = "claims"
    endpoint = "prepare"
    reply = PrepareClaimsReply
    summary = "NodePrepareResources for the claims of one kubelet call."

    claims: list[ClaimRef]


class UnprepareClaimsReply(Reply, frozen=True, kw_only=True):
    results: dict[str, ClaimUnprepareResult]


class UnprepareClaims(Command, frozen=True, kw_only=True):
    service = "claims"
    endpoint = "unprepare"
    reply = UnprepareClaimsReply
    summary = "NodeUnprepareResources for the claims of one kubelet call."

    claims: list[ClaimRef]
