"""The Kubernetes side of remediation: the Node (cordon, taint, state label, reason annotation) and drains.

Node changes of one step become one JSON merge patch. Taints are a list, which a merge patch replaces whole,
so a taint change reads the Node and makes the patch conditional on its resourceVersion (a conflict reads
again); only gpudra's own taint is added or removed, others' are kept as they are.

A drain pass lists the node's pods and, for a partial drain, the ResourceClaims that say which of this node's
devices each pod holds; the drain policy (``plan_drain``) says what to evict, delete or wait for. Evictions go
through the Eviction API, so PodDisruptionBudgets are honoured: a blocked eviction is tried again next pass.
Each eviction carries its rule's grace period, which overrides the pod's own ``terminationGracePeriodSeconds``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Collection, Iterable, Sequence
from typing import Any

import msgspec

from libs.kube import NODES, PODS, RESOURCE_CLAIMS, AlreadyExists, Conflict, KubeApi, NotFound, Obj, TooManyRequests
from libs.kube.object_rules import merge_patch
from libs.slices import DRIVER_NAME
from services.health.controller import metrics
from services.health.remediation import (
    Action,
    Cordon,
    DeviceToleration,
    DrainPlan,
    DrainPolicy,
    MarkNode,
    NodeTaint,
    Pod,
    TaintNode,
    Uncordon,
    UntaintNode,
)

log = logging.getLogger(__name__)

CONFLICT_ATTEMPTS = 8
_MIG_PARENT = re.compile(r"^(gpu-\d+)-mig-")
_FINISHED = frozenset({"Succeeded", "Failed"})

NODE_ACTIONS = (Cordon, Uncordon, TaintNode, UntaintNode, MarkNode)


def parent_gpu(device: str) -> str:
    """The GPU a MIG device lives on (``gpu-3-mig-1g10gb-0`` → ``gpu-3``); a GPU is its own parent."""
    match = _MIG_PARENT.match(device)
    return match.group(1) if match else device


class NodePatch:
    """The net effect of a sequence of node actions."""

    def __init__(self, actions: Iterable[Action]) -> None:
        self.unschedulable: bool | None = None
        self.add: dict[tuple[str, str], NodeTaint] = {}
        self.remove: set[tuple[str, str]] = set()
        self.labels: dict[str, str | None] = {}
        self.annotations: dict[str, str | None] = {}
        for action in actions:
            self._apply(action)

    def _apply(self, action: Action) -> None:
        match action:
            case Cordon():
                self.unschedulable = True
            case Uncordon():
                self.unschedulable = False
            case TaintNode(taint=taint):
                self.add[(taint.key, taint.effect)] = taint
                self.remove.discard((taint.key, taint.effect))
            case UntaintNode(taint=taint):
                self.add.pop((taint.key, taint.effect), None)
                self.remove.add((taint.key, taint.effect))
            case MarkNode(labels=labels, annotations=annotations):
                self.labels.update(labels)
                self.annotations.update(annotations)

    @property
    def touches_taints(self) -> bool:
        return bool(self.add or self.remove)

    def body(self, node: Obj | None) -> Obj:
        """The merge patch; ``node`` (as read) is needed when taints change."""
        patch: dict[str, Any] = {}
        metadata: dict[str, Any] = {}
        if self.labels:
            metadata["labels"] = self.labels
        if self.annotations:
            metadata["annotations"] = self.annotations
        spec: dict[str, Any] = {}
        if self.unschedulable is not None:
            spec["unschedulable"] = True if self.unschedulable else None
        if self.touches_taints and node is not None:
            spec["taints"] = self._taints(node)
            metadata["resourceVersion"] = node["metadata"]["resourceVersion"]
        if metadata:
            patch["metadata"] = metadata
        if spec:
            patch["spec"] = spec
        return patch

    def _taints(self, node: Obj) -> list[dict[str, str]] | None:
        current = list((node.get("spec") or {}).get("taints") or [])
        kept = [t for t in current if (t.get("key"), t.get("effect")) not in self.remove | set(self.add)]
        kept += [{"key": t.key, "value": t.value, "effect": t.effect} for t in self.add.values()]
        return kept or None


class NodeActions:
    """Applies node actions; ``create_missing`` (standalone store, no kubelet registers Nodes) creates the
    Node when it does not exist."""

    def __init__(self, kube: KubeApi, *, create_missing: bool) -> None:
        self._kube = kube
        self._create_missing = create_missing

    async def apply(self, node: str, actions: Sequence[Action]) -> None:
        patch = NodePatch(actions)
        for _ in range(CONFLICT_ATTEMPTS):
            try:
                current = await self._kube.get(NODES, node) if patch.touches_taints else None
                body = patch.body(current)
                if body:
                    await self._kube.patch(NODES, node, body)
                return
            except Conflict:
                continue
            except NotFound:
                if not self._create_missing:
                    log.warning("Node does not exist; nothing to cordon or mark", extra={"node": node})
                    return
                if await self._create(node, patch):
                    return
        raise Conflict(f"Node {node}", f"{CONFLICT_ATTEMPTS} conflicting writes in a row")

    async def _create(self, node: str, patch: NodePatch) -> bool:
        """Create the Node with the actions already in it; False when it was created meanwhile (patch it then).

        In one write, not created and then patched: a Node seen uncordoned right after gpudra cordoned it reads
        as an uncordon by hand, which cancels the remediation that wanted the cordon."""
        log.info("creating the standalone Node object", extra={"node": node})
        blank: Obj = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": node}}
        body = merge_patch(blank, patch.body(blank | {"metadata": {"name": node, "resourceVersion": ""}}))
        body["metadata"].pop("resourceVersion", None)
        try:
            await self._kube.create(NODES, body)
        except AlreadyExists:
            return False
        return True


class Drainer:
    def __init__(self, kube: KubeApi, policy: DrainPolicy, driver: str = DRIVER_NAME) -> None:
        self._kube = kube
        self._policy = policy
        self._driver = driver

    @property
    def policy(self) -> DrainPolicy:
        return self._policy

    async def pods(self, node: str, *, with_devices: bool) -> list[Pod]:
        """The node's pods; ``with_devices`` fills each pod's devices on this node, and what its claims tolerate
        on them, from its claims."""
        listed = await self._kube.list(PODS, fields={"spec.nodeName": node})
        allocated: dict[str, dict[str, Held]] = {}
        if with_devices:
            for namespace in sorted({str(p["metadata"].get("namespace") or "") for p in listed.items}):
                allocated[namespace] = await self._claim_devices(node, namespace)
        return [self._pod(obj, allocated.get(str(obj["metadata"].get("namespace") or ""), {})) for obj in listed.items]

    async def _claim_devices(self, node: str, namespace: str) -> dict[str, Held]:
        """Claim name → this node's devices allocated to it (a MIG device also names its GPU), with the
        tolerations the scheduler copied into each result."""
        claims = await self._kube.list(RESOURCE_CLAIMS, namespace)
        found: dict[str, Held] = {}
        for claim in claims.items:
            allocation = ((claim.get("status") or {}).get("allocation") or {}).get("devices") or {}
            held: Held = {}
            for result in allocation.get("results") or ():
                if result.get("driver") == self._driver and result.get("pool") == node:
                    device = str(result.get("device") or "")
                    tolerations = _tolerations(result.get("tolerations"))
                    for name in (device, parent_gpu(device)):
                        held[name] = held.get(name, ()) + tolerations
            found[str(claim["metadata"]["name"])] = held
        return found

    @staticmethod
    def _pod(obj: Obj, claims: dict[str, Held]) -> Pod:
        metadata, spec, status = obj["metadata"], obj.get("spec") or {}, obj.get("status") or {}
        by_status = {s.get("name"): s.get("resourceClaimName") for s in status.get("resourceClaimStatuses") or ()}
        names = [c.get("resourceClaimName") or by_status.get(c.get("name")) for c in spec.get("resourceClaims") or ()]
        tolerations: dict[str, tuple[DeviceToleration, ...]] = {}
        for name in names:
            for device, tolerated in claims.get(str(name), {}).items() if name else ():
                tolerations[device] = tolerations.get(device, ()) + tolerated
        return Pod(
            namespace=str(metadata.get("namespace") or ""),
            name=str(metadata["name"]),
            labels=dict(metadata.get("labels") or {}),
            owner_kinds=tuple(str(o.get("kind")) for o in metadata.get("ownerReferences") or ()),
            devices=tuple(sorted(tolerations)),
            finished=status.get("phase") in _FINISHED,
            tolerations={device: tolerated for device, tolerated in tolerations.items() if tolerated},
        )

    async def carry_out(self, node: str, plan: DrainPlan) -> list[str]:
        """Evicts and deletes what the plan says; returns the pods an eviction was refused for (budgets)."""
        blocked = []
        for eviction in plan.evict:
            try:
                await self._kube.evict(eviction.name, eviction.namespace, grace_period_seconds=eviction.grace_seconds)
                metrics.EVICTIONS.labels("evicted").inc()
                log.info("evicted pod", extra={"node": node, "pod": f"{eviction.namespace}/{eviction.name}"})
            except TooManyRequests as exc:
                metrics.EVICTIONS.labels("blocked").inc()
                blocked.append(f"{eviction.namespace}/{eviction.name}")
                log.info("eviction refused for now: %s", exc.message, extra={"node": node, "pod": blocked[-1]})
            except NotFound:
                pass
        for ref in plan.delete:
            try:
                await self._kube.delete(PODS, ref.name, ref.namespace)
                metrics.EVICTIONS.labels("deleted").inc()
                log.info(
                    "deleted pod after its drain timeout", extra={"node": node, "pod": f"{ref.namespace}/{ref.name}"}
                )
            except NotFound:
                pass
        return blocked


Held = dict[str, tuple[DeviceToleration, ...]]
"""Device → the tolerations of the claim's results for it."""


def _tolerations(listed: object) -> tuple[DeviceToleration, ...]:
    """A result's tolerations; one the API server let through but this version cannot read is left out, which
    errs on the side of the drain."""
    if not isinstance(listed, list):
        return ()
    read = []
    for item in listed:
        try:
            read.append(msgspec.convert(item, DeviceToleration))
        except msgspec.ValidationError:
            log.warning("ignoring a device toleration that cannot be read", extra={"toleration": str(item)[:200]})
    return tuple(read)


def drained_devices(device: str) -> Collection[str]:
    """Whose pods a drain for ``device`` evicts: every pod on its GPU (a reset takes the whole GPU); none named
    (the node's record) means every pod on the node."""
    return (parent_gpu(device),) if device else ()
