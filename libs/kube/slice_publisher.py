"""Publishing a node's ResourceSlices: make the API hold exactly the desired pool, writing only what changed.

The slice builder (``libs.slices``) says what the pool should be; this module makes it so. Each attempt reads the
node's published slices (by driver and node), plans with the pure ``plan_publish`` (owner reference stamped,
generation chosen, ``libs.slices.diff_slices`` deciding creates/updates/deletes), and applies the plan. A conflict
(someone, or a crashed earlier run, changed a slice since the read) or a transient failure restarts the attempt
from a fresh read after a jittered pause; a rejected object (422) stops at once, since resending cannot help.

Generation: when anything in the pool changes, every slice is rewritten with a generation above all published
ones, so the scheduler ignores the older slices while the rewrite is under way; unchanged pools are not written
at all (a restarted publisher republishing the same inventory costs one list call).
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from libs.events.catalogue.inventory import SlicesPublished
from libs.kube.backoff import Backoff
from libs.kube.errors import AlreadyExists, Conflict, KubeError, NotFound, TooManyRequests, Unavailable
from libs.kube.port import KubeApi
from libs.kube.resources import NODES, RESOURCE_SLICES, Obj
from libs.slices import DRIVER_NAME, SliceDiff, diff_slices, next_pool_generation

log = logging.getLogger(__name__)

# Worth a fresh read and another try: the pool moved under us, or the server is briefly unavailable.
RETRYABLE: tuple[type[KubeError], ...] = (Conflict, AlreadyExists, NotFound, Unavailable, TooManyRequests)
_SYNTHETIC_UID_NAMESPACE = uuid.UUID("5d0f7c1e-8f2a-4d0e-9a57-6f3a1c2b9e10")


class SlicePublishError(Exception):
    """The pool could not be published; the message names the pool and what to fix."""


@dataclass(frozen=True)
class PublishPolicy:
    attempts: int = 6
    backoff: Backoff = field(default_factory=lambda: Backoff(base=0.2, cap=10.0))


@dataclass(frozen=True)
class SlicePlan:
    diff: SliceDiff
    generation: int


@dataclass(frozen=True)
class PublishResult:
    """What one ``publish`` did; ``event()`` turns it into the ``SlicesPublished`` fact."""

    node: str
    driver: str
    pool: str
    generation: int
    slice_count: int
    device_count: int
    created: int = 0
    updated: int = 0
    deleted: int = 0
    attempts: int = 1

    @property
    def writes(self) -> int:
        return self.created + self.updated + self.deleted

    def event(self) -> SlicesPublished:
        return SlicesPublished(
            node=self.node,
            driver=self.driver,
            pool=self.pool,
            generation=self.generation,
            slice_count=self.slice_count,
            device_count=self.device_count,
            created=self.created,
            updated=self.updated,
            deleted=self.deleted,
        )


# --- pure decisions -----------------------------------------------------------------------------------------


def owner_reference(node: str, uid: str) -> Obj:
    """The Node as controller owner: the garbage collector deletes the slices when the Node goes."""
    return {"apiVersion": "v1", "kind": "Node", "name": node, "uid": uid, "controller": True}


def synthetic_node_uid(node: str) -> str:
    """A stable uid for a node the standalone store has no Node object for; stable, so restarts rewrite nothing."""
    return str(uuid.uuid5(_SYNTHETIC_UID_NAMESPACE, node))


def check_desired(desired: Sequence[Obj], *, driver: str, node: str) -> None:
    """A ValueError (a bug in the caller) when the slices are not one pool of this driver on this node."""
    problems = [
        f"{s['metadata']['name']}: driver {s['spec'].get('driver')!r}, node {s['spec'].get('nodeName')!r}"
        for s in desired
        if s["spec"].get("driver") != driver or s["spec"].get("nodeName") != node
    ]
    pools = {s["spec"]["pool"]["name"] for s in desired}
    if len(pools) > 1:
        problems.append(f"slices of several pools: {sorted(pools)}")
    if problems:
        raise ValueError(f"desired ResourceSlices are not node {node}'s pool of {driver}: {'; '.join(problems)}")


def plan_publish(desired: Sequence[Obj], existing: Sequence[Obj], owner: Obj) -> SlicePlan:
    """The writes that turn ``existing`` into ``desired`` (owned by ``owner``), and the resulting generation.

    A changed pool gets a generation above every published slice's (or the desired one, if higher); an unchanged
    pool keeps its own.
    """
    requested = max((s["spec"]["pool"]["generation"] for s in desired), default=0)
    generation = max(requested, next_pool_generation(existing))
    diff = diff_slices([_stamped(s, owner, generation) for s in desired], existing)
    if diff.unchanged:
        generation = max((s["spec"]["pool"]["generation"] for s in existing), default=generation)
    return SlicePlan(diff=diff, generation=generation)


def _stamped(resource_slice: Obj, owner: Obj, generation: int) -> Obj:
    spec = resource_slice["spec"]
    return resource_slice | {
        "metadata": resource_slice["metadata"] | {"ownerReferences": [dict(owner)]},
        "spec": spec | {"pool": spec["pool"] | {"generation": generation}},
    }


def device_count(slices: Sequence[Obj]) -> int:
    return sum(len(s["spec"].get("devices") or ()) for s in slices)


# --- the publisher ------------------------------------------------------------------------------------------


@dataclass
class _Counts:
    created: int = 0
    updated: int = 0
    deleted: int = 0


class SlicePublisher:
    """Keeps one node's pool of one driver published; one per node process, calls serialised."""

    def __init__(
        self,
        kube: KubeApi,
        node: str,
        *,
        driver: str = DRIVER_NAME,
        synthetic_owner: bool = False,
        policy: PublishPolicy | None = None,
        draw: Callable[[], float] = random.random,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """``synthetic_owner``: standalone mode, where the store may hold no Node object; the owner reference
        then carries ``synthetic_node_uid(node)`` instead of failing."""
        self.kube = kube
        self.node = node
        self.driver = driver
        self.synthetic_owner = synthetic_owner
        self.policy = policy or PublishPolicy()
        self._draw = draw
        self._sleep = sleep
        self._owner: Obj | None = None
        self._lock = asyncio.Lock()

    async def publish(self, desired: Sequence[Obj]) -> PublishResult:
        """Make the API hold exactly ``desired`` (one pool, as the slice builder made it; empty: unpublish)."""
        check_desired(desired, driver=self.driver, node=self.node)
        async with self._lock:
            counts = _Counts()
            for attempt in range(self.policy.attempts):
                try:
                    return await self._attempt(desired, counts, attempt + 1)
                except RETRYABLE as exc:
                    if attempt + 1 == self.policy.attempts:
                        raise SlicePublishError(
                            f"pool {self.node} of {self.driver}: gave up after {attempt + 1} attempts: {exc}"
                        ) from exc
                    await self._pause(attempt, exc)
                except KubeError as exc:
                    raise SlicePublishError(f"pool {self.node} of {self.driver}: {exc}") from exc
        raise SlicePublishError(f"pool {self.node} of {self.driver}: no attempts allowed by the policy")

    async def _attempt(self, desired: Sequence[Obj], counts: _Counts, attempt: int) -> PublishResult:
        owner = await self._owner_reference()
        selector = {"spec.driver": self.driver, "spec.nodeName": self.node}
        existing = (await self.kube.list(RESOURCE_SLICES, fields=selector)).items
        plan = plan_publish(desired, existing, owner)
        await self._apply(plan.diff, counts)
        result = PublishResult(
            node=self.node,
            driver=self.driver,
            pool=desired[0]["spec"]["pool"]["name"] if desired else self.node,
            generation=plan.generation,
            slice_count=len(desired),
            device_count=device_count(desired),
            created=counts.created,
            updated=counts.updated,
            deleted=counts.deleted,
            attempts=attempt,
        )
        self._log(result, plan.diff)
        return result

    async def _apply(self, diff: SliceDiff, counts: _Counts) -> None:
        """Creates and updates first, deletions last: the new generation makes old slices obsolete at once."""
        for resource_slice in diff.create:
            await self.kube.create(RESOURCE_SLICES, resource_slice)
            counts.created += 1
        for resource_slice in diff.update:
            await self.kube.update(RESOURCE_SLICES, resource_slice)
            counts.updated += 1
        for resource_slice in diff.delete:
            meta = resource_slice["metadata"]
            try:
                await self.kube.delete(RESOURCE_SLICES, meta["name"], resource_version=meta.get("resourceVersion"))
            except NotFound:
                continue  # already gone: what we wanted
            counts.deleted += 1

    async def _owner_reference(self) -> Obj:
        """The Node's uid, looked up once per process (it changes only if the Node is recreated)."""
        if self._owner is None:
            try:
                uid = (await self.kube.get(NODES, self.node))["metadata"]["uid"]
            except NotFound:
                if not self.synthetic_owner:
                    raise SlicePublishError(
                        f"Node {self.node} does not exist; GPUDRA_NODE_NAME must be this node's Kubernetes name"
                    ) from None
                uid = synthetic_node_uid(self.node)
            self._owner = owner_reference(self.node, uid)
        return self._owner

    async def _pause(self, attempt: int, exc: KubeError) -> None:
        delay = self.policy.backoff.delay(attempt, self._draw())
        log.warning(
            "publishing ResourceSlices failed; retrying with a fresh read",
            extra={"node": self.node, "driver": self.driver, "attempt": attempt + 1, "delay": delay, "error": str(exc)},
        )
        await self._sleep(delay)

    def _log(self, result: PublishResult, diff: SliceDiff) -> None:
        fields = {
            "node": self.node,
            "driver": self.driver,
            "pool": result.pool,
            "generation": result.generation,
            "slices_created": [s["metadata"]["name"] for s in diff.create],
            "slices_updated": [s["metadata"]["name"] for s in diff.update],
            "slices_deleted": [s["metadata"]["name"] for s in diff.delete],
        }
        if diff.unchanged:
            log.debug("ResourceSlices unchanged", extra=fields)
        else:
            log.info("published ResourceSlices", extra=fields)
