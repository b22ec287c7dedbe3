"""Drain policy: which pods to evict, delete or wait for, chosen again on every pass of the executor.

Per namespace or pod label (first matching rule wins, else the default): Immediate (Eviction API with a
grace period), AllowCompletion (wait for the pod to finish), DeleteAfterTimeout (wait, then delete).
System namespaces, DaemonSet pods and static (mirror) pods are never touched: they belong to the node. A
partial drain, before a GPU reset, looks only at pods that use the device.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Iterable
from typing import Literal

import msgspec

DrainMode = Literal["Immediate", "AllowCompletion", "DeleteAfterTimeout"]

SYSTEM_NAMESPACES = frozenset({"kube-system", "kube-public", "kube-node-lease"})
_NODE_OWNED = {"DaemonSet": "DaemonSet pod", "Node": "static pod"}


class DrainRule(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Matches when the pod's namespace is listed (or none are) and it carries every listed label."""

    mode: DrainMode
    namespaces: list[str] = msgspec.field(default_factory=list)
    pod_labels: dict[str, str] = msgspec.field(default_factory=dict)
    grace: dt.timedelta = dt.timedelta(seconds=60)
    timeout: dt.timedelta = dt.timedelta(minutes=60)

    def matches(self, pod: Pod) -> bool:
        in_namespace = not self.namespaces or pod.namespace in self.namespaces
        return in_namespace and all(pod.labels.get(k) == v for k, v in self.pod_labels.items())


class DrainPolicy(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    rules: list[DrainRule] = msgspec.field(default_factory=list)
    default: DrainRule = msgspec.field(default_factory=lambda: DrainRule(mode="Immediate"))
    system_namespaces: frozenset[str] = SYSTEM_NAMESPACES

    def rule_for(self, pod: Pod) -> DrainRule:
        return next((r for r in self.rules if r.matches(pod)), self.default)


class Pod(msgspec.Struct, frozen=True, kw_only=True):
    """What the policy needs of a pod on the node: the wiring fills ``devices`` from its ResourceClaims."""

    namespace: str
    name: str
    labels: dict[str, str] = msgspec.field(default_factory=dict)
    owner_kinds: tuple[str, ...] = ()
    devices: tuple[str, ...] = ()
    """The node's DRA devices allocated to the pod (for a MIG device, also name its parent GPU)."""
    finished: bool = False
    """Phase Succeeded or Failed: nothing left to drain."""


class PodRef(msgspec.Struct, frozen=True, kw_only=True):
    namespace: str
    name: str


class Eviction(PodRef, frozen=True, kw_only=True):
    grace_seconds: int


class Waiting(PodRef, frozen=True, kw_only=True):
    mode: DrainMode
    until: dt.datetime | None = None
    """When it will be deleted (DeleteAfterTimeout); None: until it finishes (AllowCompletion)."""


class Skipped(PodRef, frozen=True, kw_only=True):
    reason: str


class DrainPlan(msgspec.Struct, frozen=True, kw_only=True):
    evict: tuple[Eviction, ...] = ()
    delete: tuple[PodRef, ...] = ()
    wait: tuple[Waiting, ...] = ()
    skipped: tuple[Skipped, ...] = ()

    @property
    def done(self) -> bool:
        """Nothing left to evict, delete or wait for: report ``DrainSucceeded``."""
        return not (self.evict or self.delete or self.wait)


def plan_drain(
    pods: Iterable[Pod], devices: Collection[str], policy: DrainPolicy, started: dt.datetime, now: dt.datetime
) -> DrainPlan:
    """This pass's plan: ``devices`` empty drains the whole node, else only the pods using one of them;
    ``started`` is when the drain began (DeleteAfterTimeout counts from it)."""
    evict: list[Eviction] = []
    delete: list[PodRef] = []
    wait: list[Waiting] = []
    skipped: list[Skipped] = []
    for pod in pods:
        if pod.finished or (devices and not set(pod.devices) & set(devices)):
            continue
        if reason := _skip_reason(pod, policy):
            skipped.append(Skipped(namespace=pod.namespace, name=pod.name, reason=reason))
            continue
        rule = policy.rule_for(pod)
        ref = PodRef(namespace=pod.namespace, name=pod.name)
        if rule.mode == "Immediate":
            evict.append(
                Eviction(namespace=pod.namespace, name=pod.name, grace_seconds=int(rule.grace.total_seconds()))
            )
        elif rule.mode == "DeleteAfterTimeout" and now >= started + rule.timeout:
            delete.append(ref)
        else:
            until = started + rule.timeout if rule.mode == "DeleteAfterTimeout" else None
            wait.append(Waiting(namespace=pod.namespace, name=pod.name, mode=rule.mode, until=until))
    return DrainPlan(evict=tuple(evict), delete=tuple(delete), wait=tuple(wait), skipped=tuple(skipped))


def _skip_reason(pod: Pod, policy: DrainPolicy) -> str:
    if pod.namespace in policy.system_namespaces:
        return f"system namespace {pod.namespace}"
    return next((_NODE_OWNED[kind] for kind in pod.owner_kinds if kind in _NODE_OWNED), "")
