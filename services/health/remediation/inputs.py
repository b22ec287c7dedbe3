"""What the rules react to: faults, healthy signals, the executor's outcomes, the Node, and people.

Tagged structs (``{"type": "DrainSucceeded", ...}``), so an executor in another process can send them back.
"""

from __future__ import annotations

import msgspec

from libs.events.catalogue.health import EntityRef
from services.health.catalogue import Fault


class Input(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    pass


class FaultDetected(Input, frozen=True, kw_only=True):
    """A classified, escalated fault (``assess``). ``held``: the circuit breaker refused a new quarantine."""

    fault: Fault
    held: bool = False
    source_event_ids: tuple[str, ...] = ()


class HealthyObserved(Input, frozen=True, kw_only=True):
    """A monitor says ``check`` is healthy again on ``entity``: the conditions it raised with one of
    ``codes`` clear (all of the check's, when no codes are given)."""

    entity: EntityRef
    check: str
    codes: tuple[str, ...] = ()


class Outcome(Input, frozen=True, kw_only=True):
    """The end of a ``Work`` action, echoing its ``device`` and ``cycle``."""

    device: str = ""
    cycle: int
    detail: str = ""


class DrainSucceeded(Outcome, frozen=True, kw_only=True):
    pass


class DrainFailed(Outcome, frozen=True, kw_only=True):
    pass


class RemediationSucceeded(Outcome, frozen=True, kw_only=True):
    pass


class RemediationFailed(Outcome, frozen=True, kw_only=True):
    pass


class VerificationPassed(Outcome, frozen=True, kw_only=True):
    pass


class VerificationFailed(Outcome, frozen=True, kw_only=True):
    pass


class NodeObserved(Input, frozen=True, kw_only=True):
    """The Node as a watch sees it: a cordon that predates gpudra, a manual uncordon, the opt-out label."""

    unschedulable: bool
    labels: dict[str, str] = msgspec.field(default_factory=dict)


class InventoryObserved(Input, frozen=True, kw_only=True):
    """The node's published device names; faults for devices outside it are recorded, not acted on."""

    devices: tuple[str, ...]


class PersonReset(Input, frozen=True, kw_only=True):
    """A person puts a device (or, with no device, the node) back in service: cancels work in progress,
    clears every condition (sticky ones too) and leaves drain-failed or remediation-failed."""

    device: str = ""
    by: str
    note: str = ""


AnyOutcome = (
    DrainSucceeded | DrainFailed | RemediationSucceeded | RemediationFailed | VerificationPassed | VerificationFailed
)
AnyInput = FaultDetected | HealthyObserved | AnyOutcome | NodeObserved | InventoryObserved | PersonReset
