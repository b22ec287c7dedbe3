"""What kube-apiserver does to an object on each write, as pure functions the standalone store applies.

Server-set metadata (uid, creationTimestamp, generation, deletion marks) survives a client's PUT; status stays
when it has its own subresource; generation counts spec changes; a stale resourceVersion is a conflict; an
object with finalizers is only marked deleting. Keeping these rules in one place, apart from storage, lets them
be tested without a bus and keeps the standalone store honest about what a cluster would do.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

from libs.kube.errors import Conflict, Invalid
from libs.kube.resources import Obj, Resource

SERVER_FIELDS = ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "generation")
STALE = "the object has been modified; please apply your changes to the latest version and try again"


def kube_time(moment: datetime) -> str:
    """A ``metav1.Time`` as the API server writes it: RFC 3339 in UTC, to the second."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def now() -> str:
    return kube_time(datetime.now(UTC))


def new_object(resource: Resource, obj: Obj, *, uid: str, created: str) -> Obj:
    """The object as stored on create (without resourceVersion: the store's revision is the version)."""
    stored = copy.deepcopy(obj)
    meta = stored["metadata"]
    if meta.pop("resourceVersion", None):
        raise Invalid(
            resource.describe(meta["name"], meta.get("namespace")),
            "resourceVersion should not be set on objects to be created",
        )
    for key in SERVER_FIELDS:
        meta.pop(key, None)
    meta.update(uid=uid, creationTimestamp=created)
    if resource.tracks_generation:
        meta["generation"] = 1
    if not resource.namespaced:
        meta.pop("namespace", None)
    if resource.status_subresource:
        stored.pop("status", None)
    return stored


def check_precondition(resource: Resource, current: Obj, obj: Obj, what: str) -> None:
    """Conflict when ``obj`` names another resourceVersion or uid than ``current`` has."""
    meta, current_meta = obj["metadata"], current["metadata"]
    wanted = meta.get("resourceVersion")
    if wanted and wanted != current_meta.get("resourceVersion"):
        raise Conflict(what, STALE, reason="Conflict")
    if not wanted and resource.custom:
        raise Invalid(what, "metadata.resourceVersion: Invalid value: 0x0: must be specified for an update")
    if meta.get("uid") and meta["uid"] != current_meta.get("uid"):
        raise Conflict(
            what,
            f"Precondition failed: UID in precondition: {meta['uid']}, UID in object meta: {current_meta.get('uid')}",
            reason="Conflict",
        )


def replaced_object(resource: Resource, current: Obj, obj: Obj) -> Obj:
    """A PUT of the main resource: server fields and (with a status subresource) status stay as they were."""
    new = copy.deepcopy(obj)
    meta, current_meta = new["metadata"], current["metadata"]
    for key in SERVER_FIELDS:
        meta.pop(key, None)
        if key in current_meta:
            meta[key] = current_meta[key]
    meta.pop("resourceVersion", None)
    if not resource.namespaced:
        meta.pop("namespace", None)
    if resource.status_subresource:
        new.pop("status", None)
        if "status" in current:
            new["status"] = copy.deepcopy(current["status"])
    if resource.tracks_generation and content_changed(resource, new, current):
        meta["generation"] = int(current_meta.get("generation", 0)) + 1
    _check_finalizers(resource, new, current)
    return new


def status_replaced(current: Obj, obj: Obj) -> Obj:
    """A PUT of the status subresource: only status changes."""
    new = stored_form(current)
    new.pop("status", None)
    if "status" in obj:
        new["status"] = copy.deepcopy(obj["status"])
    return new


def content_changed(resource: Resource, new: Obj, old: Obj) -> bool:
    """Whether a write bumps metadata.generation: spec for built-ins, all but metadata/status for CRDs."""
    if not resource.custom:
        return bool(new.get("spec") != old.get("spec"))
    skip = {"metadata", "status"} if resource.status_subresource else {"metadata"}
    return {k: v for k, v in new.items() if k not in skip} != {k: v for k, v in old.items() if k not in skip}


def marked_deleting(current: Obj, when: str) -> Obj:
    marked = stored_form(current)
    marked["metadata"].update(deletionTimestamp=when, deletionGracePeriodSeconds=0)
    return marked


def deletion_finished(obj: Obj) -> bool:
    """A deleting object whose last finalizer was removed is gone."""
    meta = obj["metadata"]
    return bool(meta.get("deletionTimestamp")) and not meta.get("finalizers")


def stored_form(obj: Obj) -> Obj:
    """A copy without resourceVersion, which the store keeps as the entry's revision instead."""
    stored = copy.deepcopy(obj)
    stored["metadata"].pop("resourceVersion", None)
    return stored


def versioned(stored: Obj, revision: int) -> Obj:
    stored["metadata"]["resourceVersion"] = str(revision)
    return stored


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: maps merge recursively, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    merged = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge_patch(merged.get(key), value)
    return merged


def _check_finalizers(resource: Resource, new: Obj, current: Obj) -> None:
    if not current["metadata"].get("deletionTimestamp"):
        return
    added = set(new["metadata"].get("finalizers") or []) - set(current["metadata"].get("finalizers") or [])
    if added:
        raise Invalid(
            resource.describe(current["metadata"]["name"], current["metadata"].get("namespace")),
            f"metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted, "
            f"found new finalizers {sorted(added)}",
        )
