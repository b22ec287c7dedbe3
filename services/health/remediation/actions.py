"""What the rules ask the executor to do, as plain data.

Quarantine state is declarative (the full set of device taints gpudra wants on a device; cordon, node taint
and the node's label and annotation), so performing an action twice is harmless. Long-running work
(``Work``) carries the record's ``cycle``; the executor reports its outcome back as the matching input
(``DrainSucceeded``/``DrainFailed``, ``RemediationSucceeded``/``RemediationFailed``,
``VerificationPassed``/``VerificationFailed``) with the same ``device`` and ``cycle``, and the rules ignore
an outcome whose cycle is over.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from libs.events.catalogue.health import FaultClassified
from libs.events.catalogue.remediation import RemediationStateChanged
from libs.slices.taints import DeviceTaint
from services.health.catalogue import Fault
from services.health.remediation.config import NodeTaint

Disposition = Literal["perform", "dry-run", "held"]
"""``dry-run``: log it, do nothing (dry-run mode); ``held``: log it, do nothing (circuit breaker open)."""


class Action(msgspec.Struct, frozen=True, kw_only=True):
    node: str
    disposition: Disposition = "perform"


class SetDeviceTaints(Action, frozen=True, kw_only=True):
    """The complete set of taints the health service wants on ``device`` in the ResourceSlice (empty: none);
    taints others put there are not the health service's to touch."""

    device: str
    taints: tuple[DeviceTaint, ...]


class TaintNode(Action, frozen=True, kw_only=True):
    taint: NodeTaint


class UntaintNode(Action, frozen=True, kw_only=True):
    taint: NodeTaint


class Cordon(Action, frozen=True, kw_only=True):
    """Mark the node unschedulable (not emitted when it was cordoned before gpudra acted)."""


class Uncordon(Action, frozen=True, kw_only=True):
    """Only when gpudra cordoned the node itself, and nobody uncordoned it already."""


class MarkNode(Action, frozen=True, kw_only=True):
    """A JSON merge patch of the Node's metadata: the state label and reason annotation (None removes)."""

    labels: dict[str, str | None]
    annotations: dict[str, str | None]


class Work(Action, frozen=True, kw_only=True):
    """Long-running work for one record: ``device`` names a device record, empty means the node's."""

    device: str = ""
    cycle: int


class EvictPods(Work, frozen=True, kw_only=True):
    """Drain by the drain policy: only the pods using ``device`` (partial, before a GPU reset) or, for the
    node, every pod. Outcome: ``DrainSucceeded`` or ``DrainFailed``."""


class CancelDrain(Work, frozen=True, kw_only=True):
    """Stop an eviction run that is no longer wanted (the fault cleared, a person reset or uncordoned)."""


class ResetDevice(Work, frozen=True, kw_only=True):
    """Reset the GPU ``device``. Outcome: ``RemediationSucceeded`` or ``RemediationFailed``."""

    attempt: int


class RebootNode(Work, frozen=True, kw_only=True):
    """Reboot the machine (``bare-metal``) or restart the VM (``vm``) through the pluggable executor.
    Outcome: ``RemediationSucceeded`` (a new boot id) or ``RemediationFailed``."""

    mode: Literal["bare-metal", "vm"]
    attempt: int


class VerifyHealth(Work, frozen=True, kw_only=True):
    """Check the device (or every device of the node) is healthy again. Outcome: ``VerificationPassed`` or
    ``VerificationFailed``."""


class EscalateToNode(Action, frozen=True, kw_only=True):
    """A device's resets ran out: feed ``fault`` (node scope, RESTART_BM) back as a ``FaultDetected``,
    through escalation and the circuit breaker like any other fault."""

    fault: Fault


class Publish(Action, frozen=True, kw_only=True):
    """Publish ``event``; done in dry-run too (the event says so), held only with the quarantine it reports."""

    event: FaultClassified | RemediationStateChanged
