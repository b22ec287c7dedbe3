"""The remediation state machine's transitions and the steps it takes, as facts others can follow."""

from __future__ import annotations

from typing import Literal

from libs.events.base import Event
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
