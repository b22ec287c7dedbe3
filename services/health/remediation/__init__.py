"""The remediation controller's decisions, as pure functions over plain data.

``assess`` (dedup → classify → escalate) turns a health event into an input; the circuit breaker admits new
quarantines; ``step`` moves a node's book through the state machine and returns the actions an executor
performs; ``plan_drain`` picks the pods to evict. Nothing here does I/O or reads the clock.
"""

from services.health.remediation.actions import (
    Action,
    CancelDrain,
    Cordon,
    Disposition,
    EscalateToNode,
    EvictPods,
    MarkNode,
    Publish,
    RebootNode,
    ResetDevice,
    SetDeviceTaints,
    TaintNode,
    Uncordon,
    UntaintNode,
    VerifyHealth,
    Work,
)
from services.health.remediation.book import Condition, EntityRecord, NodeBook, new_book, record_of
from services.health.remediation.breaker import Admission, Breaker, BreakerConfig, admit, limit, reset
from services.health.remediation.config import NodeTaint, RemediationConfig
from services.health.remediation.dedup import DedupMemory, dedup_key, deduplicate
from services.health.remediation.drain import DeviceToleration, DrainPlan, DrainPolicy, DrainRule, Pod, plan_drain
from services.health.remediation.effects import device_taints, node_status
from services.health.remediation.escalation import History, escalate, record_remediation
from services.health.remediation.inputs import (
    AnyInput,
    DrainFailed,
    DrainSucceeded,
    FaultDetected,
    HealthyObserved,
    InventoryObserved,
    NodeObserved,
    PersonReset,
    RemediationFailed,
    RemediationSucceeded,
    VerificationFailed,
    VerificationPassed,
)
from services.health.remediation.machine import needs_admission, plan_of, record_only_reason, step
from services.health.remediation.pipeline import assess

__all__ = [
    "Action",
    "Admission",
    "AnyInput",
    "Breaker",
    "BreakerConfig",
    "CancelDrain",
    "Condition",
    "Cordon",
    "DedupMemory",
    "DeviceToleration",
    "Disposition",
    "DrainFailed",
    "DrainPlan",
    "DrainPolicy",
    "DrainRule",
    "DrainSucceeded",
    "EntityRecord",
    "EscalateToNode",
    "EvictPods",
    "FaultDetected",
    "HealthyObserved",
    "History",
    "InventoryObserved",
    "MarkNode",
    "NodeBook",
    "NodeObserved",
    "NodeTaint",
    "PersonReset",
    "Pod",
    "Publish",
    "RebootNode",
    "RemediationConfig",
    "RemediationFailed",
    "RemediationSucceeded",
    "ResetDevice",
    "SetDeviceTaints",
    "TaintNode",
    "Uncordon",
    "UntaintNode",
    "VerificationFailed",
    "VerificationPassed",
    "VerifyHealth",
    "Work",
    "admit",
    "assess",
    "dedup_key",
    "deduplicate",
    "device_taints",
    "escalate",
    "limit",
    "needs_admission",
    "new_book",
    "node_status",
    "plan_drain",
    "plan_of",
    "record_of",
    "record_only_reason",
    "record_remediation",
    "reset",
    "step",
]
