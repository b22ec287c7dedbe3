"""The narrow Kubernetes port the services use, over plain dict objects.

Two adapters serve it: ``ClusterKube`` (kubernetes-asyncio against a real API server) and ``LocalKube``
(standalone: a JetStream KV bucket shared by every process). A service holds a ``KubeApi`` and cannot tell which
one it has; the same contract tests run against both.

Objects are the JSON the API server speaks (``apiVersion``, ``kind``, ``metadata``, ``spec``, ``status``), never
generated model classes: they round-trip without loss, compare with ``==``, and validate against the schemas.
Which kinds exist is in ``libs.kube.resources`` (``RESOURCE_SLICES``, ``RESOURCE_CLAIMS``, ``DEVICE_CLASSES``,
``NODES``, ``PODS``, ``LEASES``, ``custom_resource(...)`` for ComputeDomains).

Semantics both adapters keep:

- ``resourceVersion`` is opaque and compared for equality only. ``update``/``update_status``/``patch``/``delete``
  given one fail with ``Conflict`` when the object has moved on; without one they apply to the latest version
  (custom resources require one on update, as on a cluster).
- ``update`` leaves ``status`` alone on kinds with a status subresource; ``update_status`` changes nothing else.
- ``patch`` is a JSON merge patch (RFC 7386): maps merge, ``None`` deletes, lists are replaced whole.
- ``watch`` without a resourceVersion first yields every current object as ADDED, then the changes; with one,
  the changes after it. It reconnects by itself; ``Expired`` means: list again and watch from the list.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Literal, NamedTuple, Protocol

from libs.kube.resources import Obj, Resource
from libs.kube.selectors import Selector

EventType = Literal["ADDED", "MODIFIED", "DELETED"]
Objects = list[Obj]  # an alias: inside the Protocol, ``list`` is the method


class WatchEvent(NamedTuple):
    """One change; unpacks as ``(type, object)``. A DELETED object is the last state the server had."""

    type: EventType
    object: Obj


@dataclass(frozen=True)
class ObjectList:
    """The items of a list call, sorted by namespace/name, and the resourceVersion to watch from."""

    items: Objects = field(default_factory=list)
    resource_version: str = ""


class KubeApi(Protocol):
    """What gpudra needs from the Kubernetes API. Errors are ``libs.kube.errors.KubeError`` subclasses."""

    async def get(self, resource: Resource, name: str, namespace: str | None = None) -> Obj:
        """The object, or ``NotFound``."""
        ...

    async def list(
        self,
        resource: Resource,
        namespace: str | None = None,
        *,
        fields: Selector | None = None,
        labels: Selector | None = None,
    ) -> ObjectList:
        """Objects in ``namespace`` (all namespaces when None) matching every equality in ``fields``/``labels``.

        Only the field paths the server indexes are accepted (``Resource.field_selectors``), else ``BadRequest``.
        """
        ...

    async def create(self, resource: Resource, obj: Obj) -> Obj:
        """Store a new object (``AlreadyExists`` if the name is taken); answers it with uid, resourceVersion,
        creationTimestamp and generation set by the server."""
        ...

    async def update(self, resource: Resource, obj: Obj) -> Obj:
        """Replace the object (not its status, where status is a subresource). A write that changes nothing
        changes nothing, not even the resourceVersion."""
        ...

    async def update_status(self, resource: Resource, obj: Obj) -> Obj:
        """Replace only ``status`` (ResourceClaim allocation, ComputeDomain status)."""
        ...

    async def patch(self, resource: Resource, name: str, patch: Obj, namespace: str | None = None) -> Obj:
        """Apply a JSON merge patch (Node labels, annotations, taints, unschedulable). Put
        ``metadata.resourceVersion`` in the patch to make it conditional."""
        ...

    async def delete(
        self, resource: Resource, name: str, namespace: str | None = None, *, resource_version: str | None = None
    ) -> None:
        """Delete (or, while finalizers remain, mark deleting); ``NotFound`` if absent, ``Conflict`` if
        ``resource_version`` is given and stale."""
        ...

    async def evict(self, name: str, namespace: str, *, grace_period_seconds: int | None = None) -> None:
        """Evict a pod through the eviction subresource; ``TooManyRequests`` while a PodDisruptionBudget
        forbids it. ``grace_period_seconds`` overrides the pod's ``terminationGracePeriodSeconds`` (None keeps
        it), as a drain policy asks. The standalone store has no budgets and no kubelet: it deletes the pod."""
        ...

    def watch(
        self,
        resource: Resource,
        namespace: str | None = None,
        *,
        fields: Selector | None = None,
        labels: Selector | None = None,
        resource_version: str | None = None,
    ) -> AsyncGenerator[WatchEvent, None]:
        """Changes as they happen, without end; close the iterator (``contextlib.aclosing``) to stop."""
        ...

    async def close(self) -> None:
        """Release connections; the adapter is unusable afterwards."""
        ...
