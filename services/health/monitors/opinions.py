"""The monitor's first opinion on what a hardware report needs, from the facts table (facts/gpu-faults.md).

It agrees with the controller's default catalogue (``services/health/catalogue/defaults.yaml``) so that an
extender reading the events alone sees the same advice.
Only a first opinion: the remediation controller's catalogue (operator-overridable, with escalation rules
such as "the same XID five times in 24 h") makes the verdict. Kept small on purpose: the monitors publish
every XID, including the application-level ones reference drivers ignore (13, 31, 43, 45, 68, 109), because
the controller's escalation rules count them.
"""

from __future__ import annotations

from libs.devices.events import RecoveryAction
from libs.events.catalogue.health import RecommendedAction

_APPLICATION = (8, 11, 13, 25, 31, 32, 39, 40, 41, 45, 68, 69, 70, 71, 72, 94)
_INFORMATIONAL = (14, 37, 38, 43, 44, 63, 66, 67, 92, 93, 121, 137)
_RESET = (46, 48, 62, 64, 74, 95, 109, 110, 119, 120, 136, 140, 143, 155, 156, 158)
"""74 (NVLink error) included: a reset retrains the links; the controller escalates repeats to CONTACT_SUPPORT."""

XID_ACTIONS: dict[int, RecommendedAction] = {
    **dict.fromkeys(_APPLICATION, "NONE"),
    **dict.fromkeys(_INFORMATIONAL, "NONE"),
    **dict.fromkeys(_RESET, "COMPONENT_RESET"),
    79: "RESTART_BM",
    160: "RESTART_BM",
    151: "RESTART_VM",
}
UNKNOWN_XID_ACTION: RecommendedAction = "CONTACT_SUPPORT"
"""54, 78, 159 and every XID the table does not know."""

XID_MEANINGS: dict[int, str] = {
    13: "graphics engine exception",
    31: "GPU memory page fault",
    43: "GPU stopped processing (application)",
    45: "preemptive cleanup",
    48: "double-bit ECC error",
    63: "row remapping event",
    64: "row remapping failure",
    74: "NVLink error",
    79: "GPU has fallen off the bus",
    94: "contained ECC error",
    95: "uncontained ECC error",
    119: "GSP RPC timeout",
    120: "GSP error",
}

RECOVERY_ACTIONS: dict[int, RecommendedAction] = {
    RecoveryAction.NONE: "NONE",
    RecoveryAction.GPU_RESET: "COMPONENT_RESET",
    RecoveryAction.NODE_REBOOT: "RESTART_BM",
    RecoveryAction.DRAIN_AND_RESET: "COMPONENT_RESET",
}
"""DRAIN_P2P and values newer than the enum: CONTACT_SUPPORT (gpudra does not carry them out; a person must)."""

GPU_LOST_ACTION: RecommendedAction = "RESTART_BM"
"""Like XID 79: a GPU that stopped answering needs the node rebooted."""


def xid_action(xid: int) -> RecommendedAction:
    return XID_ACTIONS.get(xid, UNKNOWN_XID_ACTION)


def xid_meaning(xid: int) -> str:
    return XID_MEANINGS.get(xid, "see NVIDIA's XID catalogue")


def recovery_action(action: int) -> RecommendedAction:
    return RECOVERY_ACTIONS.get(action, "CONTACT_SUPPORT")


def recovery_action_name(action: int) -> str:
    """NVML's name (``GPU_RESET``) or ``ACTION_<n>`` for a value newer than this code."""
    try:
        return RecoveryAction(action).name
    except ValueError:
        return f"ACTION_{action}"
