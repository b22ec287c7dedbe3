"""The remediation state machine's transitions and the steps it takes, as facts others can follow."""

from __future__ import annotations

from typing import Literal

from libs.events.base import Command, Event, Reply
from libs.events.catalogue.health import EntityRef

RemediationState = Literal[
    "healthy",
    "quarantined",
    "draining",
    "remediating",
    "verifying",
    "drain-failed",
    "remediation-failed",
]
Step = Literal["cordon", "uncordon", "taint", "untaint", "drain", "evict", "gpu-reset", "reboot", "verify"]


class RemediationStateChanged(Event, frozen=True, kw_only=True):
    domain = "remediation"
    topic = "states"
    summary = "A device or node moved in the remediation state machine."

    scope: Literal["device", "node"]
    entity: EntityRef
    previous: RemediationState
    state: RemediationState
    reason: str = ""
    fault: str = ""
    attempt: int = 0
    dry_run: bool = False
    """True when the controller runs in dry-run mode: the state moved, but nothing was done to the cluster."""

    def ce_subject(self) -> str:
        return self.entity.id


class RemediationStepCompleted(Event, frozen=True, kw_only=True):
    domain = "remediation"
    topic = "steps"
    summary = "One remediation action finished (or was skipped, or only logged in dry-run mode)."

    entity: EntityRef
    step: Step
    outcome: Literal["succeeded", "failed", "skipped", "dry-run"]
    detail: str = ""
    duration_ms: float = 0.0

    def ce_subject(self) -> str:
        return self.entity.id


class CircuitBreakerChanged(Event, frozen=True, kw_only=True):
    domain = "remediation"
    topic = "breaker"
    summary = "The quarantine circuit breaker tripped (new quarantines halted) or was reset by a person."

    state: Literal["closed", "open"]
    reason: str
    quarantined_nodes: int
    window_seconds: int


class ResetBreakerReply(Reply, frozen=True, kw_only=True):
    state: Literal["closed", "open"]
    reason: str = ""
    released: int = 0
    """Faults the open breaker had held, handed back for admission now that it is closed."""


class ResetBreaker(Command, frozen=True, kw_only=True):
    service = "remediation"
    endpoint = "reset-breaker"
    reply = ResetBreakerReply
    summary = "A person closes the quarantine circuit breaker (served by the remediation controller on _cluster)."

    by: str = ""


class ResetRemediationReply(Reply, frozen=True, kw_only=True):
    node: str
    device: str = ""
    state: RemediationState


class ResetRemediation(Command, frozen=True, kw_only=True):
    service = "remediation"
    endpoint = "reset"
    reply = ResetRemediationReply
    summary = "A person puts a device (or the node) back in service: work in progress stops, its conditions clear."

    node: str
    device: str = ""
    by: str = ""
    note: str = ""
