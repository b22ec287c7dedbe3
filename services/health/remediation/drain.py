"""Drain policy: which pods to evict, delete or wait for, chosen again on every pass of the executor.

Per namespace or pod label (first matching rule wins, else the default): Immediate (Eviction API with a
grace period), AllowCompletion (wait for the pod to finish), DeleteAfterTimeout (wait, then delete).
System namespaces, DaemonSet pods and static (mirror) pods are never touched: they belong to the node. A
partial drain, before a GPU reset, looks only at pods that use the device.

Device taints with effect NoExecute are honoured as Kubernetes 1.36 defines them (KEP-5055): a pod whose claim
tolerates every NoExecute taint on the devices being drained stays (the drain waits for it) until its
``tolerationSeconds``, counted from the taint's ``timeAdded``, have passed; without them it stays until the
drain times out and a person decides. NoSchedule taints keep new claims off the device and evict nothing by
themselves, so tolerating them changes nothing here: the reset still needs the GPU to itself.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Literal

import msgspec

from libs.slices.taints import DeviceTaint

DrainMode = Literal["Immediate", "AllowCompletion", "DeleteAfterTimeout"]
WaitReason = Literal["AllowCompletion", "DeleteAfterTimeout", "TaintTolerated"]

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


class DeviceToleration(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """A claim's toleration of device taints (``results[].tolerations``, as the scheduler copies them)."""

    key: str = ""
    operator: Literal["Exists", "Equal"] = "Equal"
    value: str = ""
    effect: str = ""
    """Empty: every effect."""
    toleration_seconds: int | None = None

    def tolerates(self, taint: DeviceTaint) -> bool:
        if self.effect and self.effect != taint.effect:
            return False
        if self.operator == "Exists":
            return not self.key or self.key == taint.key
        return self.key == taint.key and self.value == (taint.value or "")


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
    tolerations: dict[str, tuple[DeviceToleration, ...]] = msgspec.field(default_factory=dict)
    """Per device of ``devices``, what its claims tolerate."""


class PodRef(msgspec.Struct, frozen=True, kw_only=True):
    namespace: str
    name: str


class Eviction(PodRef, frozen=True, kw_only=True):
    grace_seconds: int


class Waiting(PodRef, frozen=True, kw_only=True):
    mode: WaitReason
    until: dt.datetime | None = None
    """When it will be deleted (DeleteAfterTimeout) or its toleration ends (TaintTolerated); None: until it
    finishes (AllowCompletion) or for as long as the drain may take (a toleration without seconds)."""


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
    pods: Iterable[Pod],
    devices: Collection[str],
    policy: DrainPolicy,
    started: dt.datetime,
    now: dt.datetime,
    *,
    taints: Mapping[str, Sequence[DeviceTaint]] | None = None,
) -> DrainPlan:
    """This pass's plan: ``devices`` empty drains the whole node, else only the pods using one of them;
    ``started`` is when the drain began (DeleteAfterTimeout counts from it); ``taints`` are the drained
    devices' taints (a pod tolerating their NoExecute ones waits, see above)."""
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
        tolerated, until = _tolerated(pod, devices, taints or {}, started, now)
        if tolerated:
            wait.append(Waiting(namespace=pod.namespace, name=pod.name, mode="TaintTolerated", until=until))
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


def _tolerated(
    pod: Pod,
    devices: Collection[str],
    taints: Mapping[str, Sequence[DeviceTaint]],
    started: dt.datetime,
    now: dt.datetime,
) -> tuple[bool, dt.datetime | None]:
    """Whether the pod tolerates every NoExecute taint of the drained devices it uses, and until when."""
    ends: list[dt.datetime] = []
    held = [d for d in pod.devices if d in devices] if devices else list(pod.devices)
    binding = [(d, t) for d in held for t in taints.get(d, ()) if t.effect == "NoExecute"]
    if not binding:
        return False, None
    for device, taint in binding:
        matching = [t for t in pod.tolerations.get(device, ()) if t.tolerates(taint)]
        if not matching:
            return False, None
        if all(t.toleration_seconds is not None for t in matching):
            seconds = max(t.toleration_seconds or 0 for t in matching)
            ends.append(_added(taint, started) + dt.timedelta(seconds=seconds))
    until = min(ends, default=None)
    return (until is None or now < until), until


def _added(taint: DeviceTaint, fallback: dt.datetime) -> dt.datetime:
    if taint.time_added is None:
        return fallback
    try:
        return dt.datetime.fromisoformat(taint.time_added)
    except ValueError:
        return fallback


def _skip_reason(pod: Pod, policy: DrainPolicy) -> str:
    if pod.namespace in policy.system_namespaces:
        return f"system namespace {pod.namespace}"
    return next((_NODE_OWNED[kind] for kind in pod.owner_kinds if kind in _NODE_OWNED), "")
