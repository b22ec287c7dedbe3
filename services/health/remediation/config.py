"""The remediation controller's settings that the rules read (the wiring builds them from its settings)."""

from __future__ import annotations

from typing import Literal

import msgspec

from libs.slices.build import DRIVER_NAME


class NodeTaint(msgspec.Struct, frozen=True, kw_only=True):
    key: str
    value: str
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"]


class RemediationConfig(msgspec.Struct, frozen=True, kw_only=True):
    dry_run: bool = False
    """Decide and publish as usual, but mark every action dry-run so the executor only logs it."""
    max_attempts: int = 3
    """GPU resets (or reboots) tried before giving up; verification failures count as attempts."""
    reset_falls_back_to_reboot: bool = True
    """When a GPU's resets run out, reboot the node instead of stopping at remediation-failed."""
    taint_domain: str = DRIVER_NAME
    """Device taint keys are ``<taint_domain>/<check>`` (``gpu.gpudra.io/xid`` with the XID as value)."""
    node_taint: NodeTaint = NodeTaint(key=f"{DRIVER_NAME}/gpu-error", value="fatal", effect="NoSchedule")
    state_label: str = f"{DRIVER_NAME}/remediation-state"
    reason_annotation: str = f"{DRIVER_NAME}/remediation-reason"
    opt_out_label: str = f"{DRIVER_NAME}/remediation"
    opt_out_value: str = "disabled"
    """A node labelled ``<opt_out_label>=<opt_out_value>`` is never quarantined; its faults are only recorded."""
