"""Object storage of the test API server: what etcd, the watch cache and the GC do.

Tests also use it directly (``server.store``) to arrange state and to assert on it without
HTTP: direct writes skip validation and request counters, as writing to etcd would, but
they assign resourceVersions, emit watch events and garbage-collect like API writes.
"""

from __future__ import annotations

import asyncio
import bisect
import copy
import random
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

from .errors import ApiError, JsonObj, already_exists, conflict, expired, not_found
from .resources import CRD_KEY, ResourceRegistry, ResourceType, crd_resource_types

T = TypeVar("T")
Objects = list[JsonObj]  # aliases: inside Store, ``list`` is the method
WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})
_NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def generate_name(meta: JsonObj) -> None:
    """``generateName`` plus five random characters, as names.SimpleNameGenerator does."""
    if not meta.get("name") and meta.get("generateName"):
        meta["name"] = meta["generateName"] + "".join(random.choices(_NAME_CHARS, k=5))


@dataclass(frozen=True)
class WatchEvent:
    """One change; ``old`` lets a filtered watch turn a MODIFIED into ADDED/DELETED."""

    rv: int
    type: str
    key: tuple[str, str]
    obj: JsonObj
    old: JsonObj | None


Events = list[WatchEvent]


@dataclass
class Failure:
    """An injected error answer: matches verb/resource[/namespace/name]; ``times`` None is forever."""

    verb: str
    resource: str
    name: str | None
    namespace: str | None
    code: int
    times: int | None
    message: str | None

    def matches(self, verb: str, resource: str, namespace: str | None, name: str | None) -> bool:
        return (
            self.verb in ("*", verb)
            and self.resource == resource
            and self.name in (None, name)
            and self.namespace in (None, namespace)
        )


class Store:
    """Objects keyed by (group, plural) then (namespace, name); one global resourceVersion."""

    def __init__(self, registry: ResourceRegistry, history_limit: int = 10_000) -> None:
        self.registry = registry
        self.history_limit = history_limit
        self.requests: Counter[tuple[str, str]] = Counter()
        self.evictions: list[JsonObj] = []
        """Every Eviction the server accepted, as received (``deleteOptions`` included), in order."""
        self._objects: dict[tuple[str, str], dict[tuple[str, str], JsonObj]] = {}
        self._uids: dict[str, tuple[tuple[str, str], tuple[str, str]]] = {}
        self._history: Events = []
        self._compacted = 0
        self._rv = 1000
        self._failures: list[Failure] = []
        self._changed = asyncio.Event()
        self.closed = False

    # --- direct access for tests -------------------------------------------------------------------

    @property
    def resource_version(self) -> int:
        return self._rv

    def create(self, obj: JsonObj) -> JsonObj:
        """Store ``obj`` (its apiVersion/kind pick the resource); fills uid, resourceVersion, etc."""
        obj = copy.deepcopy(obj)
        rt = self.registry.for_kind(obj["apiVersion"], obj["kind"])
        meta = obj.setdefault("metadata", {})
        generate_name(meta)
        if rt.namespaced:
            meta.setdefault("namespace", "default")
        return copy.deepcopy(self.insert(rt, obj))

    def get(self, resource: str, name: str, namespace: str | None = None) -> JsonObj | None:
        """A copy of the object, or None. ``resource`` is ``plural`` or ``plural.group``;
        namespaced objects default to the ``default`` namespace, as with kubectl."""
        rt = self.registry.resolve(resource)
        found = self.lookup(rt, _namespace(rt, namespace), name)
        return copy.deepcopy(found) if found is not None else None

    def list(self, resource: str, namespace: str | None = None) -> Objects:
        """Copies of the objects, sorted by namespace/name; all namespaces when ``namespace`` is None."""
        return copy.deepcopy(self.objects(self.registry.resolve(resource), namespace))

    def update(self, obj: JsonObj) -> JsonObj:
        """Replace an object wholesale (status included), e.g. to play kubelet or the scheduler."""
        rt = self.registry.for_kind(obj["apiVersion"], obj["kind"])
        meta = obj["metadata"]
        old = self.lookup(rt, meta.get("namespace"), meta["name"])
        if old is None:
            raise not_found(rt.group, rt.plural, meta["name"])
        new = copy.deepcopy(obj)
        for key in ("uid", "creationTimestamp"):
            new["metadata"][key] = old["metadata"][key]
        return copy.deepcopy(self.replace(rt, new))

    def delete(self, resource: str, name: str, namespace: str | None = None) -> JsonObj | None:
        """Delete like the API does (finalizers, GC); None when there was no such object."""
        rt = self.registry.resolve(resource)
        namespace = _namespace(rt, namespace)
        if self.lookup(rt, namespace, name) is None:
            return None
        return copy.deepcopy(self.delete_object(rt, namespace, name)[0])

    def writes(self, resource: str | None = None) -> int:
        """Write requests received over HTTP (failed ones too) for ``resource`` and its subresources."""
        return sum(
            n
            for (verb, res), n in self.requests.items()
            if verb in WRITE_VERBS and (resource is None or res == resource or res.startswith(resource + "/"))
        )

    def reset_counts(self) -> None:
        self.requests.clear()

    def fail(
        self,
        verb: str,
        resource: str,
        *,
        name: str | None = None,
        namespace: str | None = None,
        code: int = 500,
        times: int | None = 1,
        message: str | None = None,
    ) -> None:
        """Make matching requests answer ``code`` (409/429/500/...) ``times`` times (None: until cleared).

        ``verb`` is get/list/watch/create/update/patch/delete/deletecollection or ``*``;
        ``resource`` is a plural with an optional subresource: ``pods/eviction``, ``resourceclaims/status``.
        """
        self._failures.append(Failure(verb, resource, name, namespace, code, times, message))

    def block_eviction(self, namespace: str, name: str, *, code: int = 429, times: int | None = None) -> None:
        """Evictions of this pod answer 429 (a PodDisruptionBudget forbids it) or ``code``."""
        self.fail("create", "pods/eviction", name=name, namespace=namespace, code=code, times=times)

    def clear_failures(self) -> None:
        self._failures.clear()

    def take_failure(self, verb: str, resource: str, namespace: str | None, name: str | None) -> Failure | None:
        """The first injected failure matching this request, consuming one of its ``times``."""
        for failure in self._failures:
            if failure.matches(verb, resource, namespace, name):
                if failure.times is not None:
                    failure.times -= 1
                    if failure.times <= 0:
                        self._failures.remove(failure)
                return failure
        return None

    async def wait_for(self, predicate: Callable[[], T | None], timeout: float = 5.0) -> T:
        """Return ``predicate()`` once it is truthy, checking now and after every store change."""
        async with asyncio.timeout(timeout):
            while not (result := predicate()):
                await self.changed()
        return result

    async def changed(self) -> None:
        """Wait for the next write (or for the server to close)."""
        await self._changed.wait()

    # --- history, used by watches ---------------------------------------------------------------------

    def events_since(self, rv: int) -> Events:
        """Events after ``rv``; 410 Expired when history before it was compacted."""
        if rv < self._compacted:
            raise expired(f"too old resource version: {rv} ({self._compacted})")
        start = bisect.bisect_right(self._history, rv, key=lambda e: e.rv)
        return self._history[start:]

    def compact(self) -> None:
        """Forget all history, as etcd compaction does: watches from an older rv get 410."""
        self._history.clear()
        self._compacted = self._rv

    def close(self) -> None:
        self.closed = True
        self._notify()

    # --- primitives used by the API operations ----------------------------------------------------------

    def lookup(self, rt: ResourceType, namespace: str | None, name: str) -> JsonObj | None:
        """The stored object itself (never mutate it: writes replace objects)."""
        return self._objects.get(rt.storage_key, {}).get((namespace or "", name))

    def objects(self, rt: ResourceType, namespace: str | None = None) -> Objects:
        bucket = self._objects.get(rt.storage_key, {})
        return [bucket[k] for k in sorted(bucket) if namespace is None or k[0] == namespace]

    def insert(self, rt: ResourceType, obj: JsonObj) -> JsonObj:
        meta = obj["metadata"]
        bucket = self._objects.setdefault(rt.storage_key, {})
        key = (meta.get("namespace", "") if rt.namespaced else "", meta["name"])
        if key in bucket:
            raise already_exists(rt.group, rt.plural, meta["name"])
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", now())
        if rt.tracks_generation:
            meta.setdefault("generation", 1)
        if rt.storage_key == CRD_KEY:
            obj["status"] = _established(obj)
        self._write(rt, key, obj, None)
        return obj

    def replace(self, rt: ResourceType, obj: JsonObj) -> JsonObj:
        """Store a new version; removing the last finalizer of a deleting object deletes it."""
        meta = obj["metadata"]
        key = (meta.get("namespace", "") if rt.namespaced else "", meta["name"])
        old = self._objects.get(rt.storage_key, {}).get(key)
        if old is None:
            raise not_found(rt.group, rt.plural, meta["name"])
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            return self._remove(rt, key, orphan=False, final=obj)
        self._write(rt, key, obj, old)
        return obj

    def delete_object(
        self, rt: ResourceType, namespace: str | None, name: str, *, orphan: bool = False
    ) -> tuple[JsonObj, bool]:
        """Delete, or only mark deleting while finalizers remain; returns (object, gone)."""
        key = (namespace or "", name)
        old = self._objects.get(rt.storage_key, {}).get(key)
        if old is None:
            raise not_found(rt.group, rt.plural, name)
        if old["metadata"].get("finalizers"):
            if old["metadata"].get("deletionTimestamp"):
                return old, False
            marked = copy.deepcopy(old)
            marked["metadata"].update(deletionTimestamp=now(), deletionGracePeriodSeconds=0)
            self._write(rt, key, marked, old)
            return marked, False
        return self._remove(rt, key, orphan=orphan), True

    # --- internals --------------------------------------------------------------------------------------

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _record(self, event_type: str, rt: ResourceType, obj: JsonObj, old: JsonObj | None) -> None:
        self._history.append(WatchEvent(self._rv, event_type, rt.storage_key, obj, old))
        if len(self._history) > self.history_limit * 5 // 4:
            drop = len(self._history) - self.history_limit
            self._compacted = self._history[drop - 1].rv
            del self._history[:drop]
        self._notify()

    def _write(self, rt: ResourceType, key: tuple[str, str], obj: JsonObj, old: JsonObj | None) -> None:
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        self._objects.setdefault(rt.storage_key, {})[key] = obj
        self._uids[obj["metadata"]["uid"]] = (rt.storage_key, key)
        if rt.storage_key == CRD_KEY:
            self._serve_crd(obj)
        self._record("ADDED" if old is None else "MODIFIED", rt, obj, old)

    def _remove(self, rt: ResourceType, key: tuple[str, str], *, orphan: bool, final: JsonObj | None = None) -> JsonObj:
        obj = self._objects[rt.storage_key].pop(key)
        self._uids.pop(obj["metadata"]["uid"], None)
        self._rv += 1
        gone = copy.deepcopy(final or obj)
        gone["metadata"]["resourceVersion"] = str(self._rv)
        self._record("DELETED", rt, gone, obj)
        if rt.storage_key == CRD_KEY:
            self._unserve_crd(obj)
        if not orphan:
            self._collect_garbage(obj["metadata"]["uid"])
        return gone

    def _collect_garbage(self, owner_uid: str) -> None:
        """What the garbage collector does once an owner is gone: drop the dangling reference, and
        delete dependents that have no owner left (a Node's ResourceSlices)."""
        dependents = [
            (storage_key, key)
            for storage_key, bucket in self._objects.items()
            for key, obj in bucket.items()
            if any(o.get("uid") == owner_uid for o in obj["metadata"].get("ownerReferences") or [])
        ]
        for storage_key, key in dependents:
            obj = self._objects.get(storage_key, {}).get(key)
            if obj is None:  # collected by an earlier, recursive step
                continue
            rt = self._rt_for(storage_key)
            if rt is None:  # objects of a CRD that is no longer served
                continue
            left = [o for o in obj["metadata"]["ownerReferences"] if o.get("uid") != owner_uid]
            if any(o.get("uid") in self._uids for o in left):
                updated = copy.deepcopy(obj)
                updated["metadata"]["ownerReferences"] = left
                self._write(rt, key, updated, obj)
            else:
                self.delete_object(rt, key[0], key[1])

    def _rt_for(self, storage_key: tuple[str, str]) -> ResourceType | None:
        return next((rt for rt in self.registry.all() if rt.storage_key == storage_key), None)

    def _serve_crd(self, crd: JsonObj) -> None:
        spec = crd["spec"]
        self.registry.remove(spec["group"], spec["names"]["plural"])
        for rt in crd_resource_types(crd):
            self.registry.add(rt)

    def _unserve_crd(self, crd: JsonObj) -> None:
        """Deleting a CRD deletes its objects and stops serving it."""
        spec = crd["spec"]
        key = (spec["group"], spec["names"]["plural"])
        rt = self._rt_for(key)
        if rt is not None:
            for obj_key in list(self._objects.get(key, {})):
                self._remove(rt, obj_key, orphan=False)
        self._objects.pop(key, None)
        self.registry.remove(*key)


def _namespace(rt: ResourceType, namespace: str | None) -> str | None:
    return (namespace or "default") if rt.namespaced else None


def _established(crd: JsonObj) -> JsonObj:
    """The status the apiextensions controllers would set right after creation."""
    spec = crd["spec"]
    conditions = [
        {"type": t, "status": "True", "reason": r, "message": m, "lastTransitionTime": now()}
        for t, r, m in (
            ("NamesAccepted", "NoConflicts", "no conflicts found"),
            ("Established", "InitialNamesAccepted", "the initial names have been accepted"),
        )
    ]
    storage = [v["name"] for v in spec.get("versions", []) if v.get("storage")]
    return {"conditions": conditions, "acceptedNames": spec["names"], "storedVersions": storage}


def raise_injected(failure: Failure, rt: ResourceType, name: str | None) -> None:
    """Turn an injected failure into the error the real server would send for that code."""
    if failure.code == 409:
        raise conflict(rt.group, rt.plural, name or "")
    if failure.code == 404:
        raise not_found(rt.group, rt.plural, name or "")
    if failure.code == 429 and failure.resource == "pods/eviction":
        raise ApiError(
            429,
            failure.message or "Cannot evict pod as it would violate the pod's disruption budget.",
            details={
                "causes": [
                    {
                        "reason": "DisruptionBudget",
                        "message": "The disruption budget test-pdb needs 1 healthy pods and has 1 currently",
                    }
                ]
            },
        )
    raise ApiError(failure.code, failure.message or f"injected failure ({failure.code})")
