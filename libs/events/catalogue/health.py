"""Fault detection on a node and the controller's verdicts about them."""

from __future__ import annotations

import datetime as dt
from typing import Literal

import msgspec

from libs.events.base import Command, Event, Reply

RecommendedAction = Literal[
    "NONE",
    "COMPONENT_RESET",
    "CONTACT_SUPPORT",
    "RUN_FIELDDIAG",
    "RESTART_VM",
    "RESTART_BM",
    "REPLACE_VM",
    "RUN_DCGMEUD",
    "CUSTOM",
    "UNKNOWN",
]
Component = Literal["gpu", "mig", "memory", "nvlink", "pcie", "thermal", "node", "monitor"]
TaintEffect = Literal["NoSchedule", "NoExecute", "None"]
Disposition = Literal["acted", "recorded", "held", "dry-run"]
"""What the controller did with a verdict: acted on it, only recorded it (informational, unknown check or
device, node opted out), held it (circuit breaker open) or only logged what it would do (dry-run)."""


class EntityRef(msgspec.Struct, frozen=True, kw_only=True):
    """The thing a health fact is about: a GPU (by uuid), a MIG device, a link, or the node itself."""

    kind: Literal["gpu", "mig", "nvlink", "node"]
    id: str
    device: str = ""
    """The DRA device name (``gpu-3``) when the entity is published in a ResourceSlice."""


class HealthEvent(Event, frozen=True, kw_only=True):
    domain = "health"
    topic = "events"
    summary = "A node monitor observed a condition (or its clearing) on a GPU, MIG device, link or node."

    check: str
    component: Component
    entity: EntityRef
    error_codes: list[str] = msgspec.field(default_factory=list)
    fatal: bool = False
    healthy: bool = False
    recommended_action: RecommendedAction = "NONE"
    message: str = ""
    detected_at: dt.datetime | None = None

    def ce_subject(self) -> str:
        return self.entity.id


class MonitorStatusChanged(Event, frozen=True, kw_only=True):
    domain = "health"
    topic = "monitors"
    summary = "A monitor stopped answering (its devices are unmonitored) or came back."

    monitor: str
    monitored: bool
    entities: list[EntityRef] = msgspec.field(default_factory=list)
    reason: str = ""

    def ce_subject(self) -> str:
        return self.monitor


class DeviceHealthChanged(Event, frozen=True, kw_only=True):
    domain = "health"
    topic = "devices"
    summary = "A published device's health changed; the kubelet health stream and device taints follow it."

    pool: str
    device: str
    health: Literal["Healthy", "Unhealthy", "Unknown"]
    reason: str = ""

    def ce_subject(self) -> str:
        return self.device


class FaultClassified(Event, frozen=True, kw_only=True):
    domain = "health"
    topic = "verdicts"
    summary = "The remediation controller's verdict on health events: which fault, what action, what taint."

    entity: EntityRef
    fault: str
    action: RecommendedAction
    taint_effect: TaintEffect | None = None
    escalated: bool = False
    reason: str = ""
    source_event_ids: list[str] = msgspec.field(default_factory=list)
    disposition: Disposition = "acted"

    def ce_subject(self) -> str:
        return self.entity.id


class ResetGpuReply(Reply, frozen=True, kw_only=True):
    device: str
    duration_ms: float


class ResetGpu(Command, frozen=True, kw_only=True):
    service = "health"
    endpoint = "reset-gpu"
    reply = ResetGpuReply
    summary = "Reset one GPU on this node (the remediation controller's GPU-reset executor)."

    device: str
    reason: str = ""


class InjectFaultReply(Reply, frozen=True, kw_only=True):
    device: str
    kind: str


class InjectFault(Command, frozen=True, kw_only=True):
    service = "devices"
    endpoint = "inject-fault"
    reply = InjectFaultReply
    summary = "Simulated backend only: make a device report a fault, as real hardware would."

    device: str
    kind: Literal["xid", "ecc-single", "ecc-double", "gpu-lost", "gpu-back", "nvlink-down", "thermal"]
    xid: int | None = None
    count: int = 1
