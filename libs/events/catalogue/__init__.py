"""Every event and command, one module per domain."""

from libs.events.catalogue.claims import (
    ClaimFailed,
    ClaimPrepared,
    ClaimPrepareResult,
    ClaimRef,
    ClaimUnprepared,
    ClaimUnprepareResult,
    PrepareClaims,
    PrepareClaimsReply,
    PreparedDevice,
    UnprepareClaims,
    UnprepareClaimsReply,
)
from libs.events.catalogue.computedomains import ComputeDomainNodeChanged, ComputeDomainStatusChanged
from libs.events.catalogue.health import (
    DeviceHealthChanged,
    EntityRef,
    FaultClassified,
    HealthEvent,
    InjectFault,
    InjectFaultReply,
    MonitorStatusChanged,
    RecommendedAction,
    ResetGpu,
    ResetGpuReply,
)
from libs.events.catalogue.inventory import InventoryChanged, SlicesPublished
from libs.events.catalogue.remediation import (
    CircuitBreakerChanged,
    RemediationStateChanged,
    RemediationStepCompleted,
)
from libs.events.catalogue.system import ServiceCrashed

__all__ = [
    "CircuitBreakerChanged",
    "ClaimFailed",
    "ClaimPrepareResult",
    "ClaimPrepared",
    "ClaimRef",
    "ClaimUnprepareResult",
    "ClaimUnprepared",
    "ComputeDomainNodeChanged",
    "ComputeDomainStatusChanged",
    "DeviceHealthChanged",
    "EntityRef",
    "FaultClassified",
    "HealthEvent",
    "InjectFault",
    "InjectFaultReply",
    "InventoryChanged",
    "MonitorStatusChanged",
    "PrepareClaims",
    "PrepareClaimsReply",
    "PreparedDevice",
    "RecommendedAction",
    "RemediationStateChanged",
    "RemediationStepCompleted",
    "ResetGpu",
    "ResetGpuReply",
    "ServiceCrashed",
    "SlicesPublished",
    "UnprepareClaims",
    "UnprepareClaimsReply",
]
