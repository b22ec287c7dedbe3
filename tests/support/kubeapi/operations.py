"""The verbs with kube-apiserver semantics, independent of HTTP.

Optimistic concurrency, what each write may change (status subresource, generation,
finalizers), preconditions and validation all live here so the HTTP layer only parses
requests and the store only stores.

A write (create, update, patch, delete) is answered as a ``Change``: checked, not yet stored. The server
shows it to the validating admission webhooks (admission.py), as kube-apiserver does after validation and
before storage, and only then calls ``commit``. Evictions delete at once: kube-apiserver deletes an evicted
pod without admission too.
"""

from __future__ import annotations

import base64
import copy
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from .errors import ApiError, JsonObj, bad_request, conflict, forbidden, internal, invalid, invalid_object, not_found
from .patch import apply_patch
from .resources import ResourceType
from .selectors import Matcher, field_matcher, label_matcher
from .store import Store, generate_name, now
from .validation import Validator, apply_defaults

_SERVER_FIELDS = ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "generation")


def present(rt: ResourceType, obj: JsonObj) -> JsonObj:
    """The object as served at ``rt``'s version (custom resources share storage across versions)."""
    return obj if obj.get("apiVersion") == rt.api_version else {**obj, "apiVersion": rt.api_version}


def list_item(rt: ResourceType, obj: JsonObj) -> JsonObj:
    """Built-in list items carry no apiVersion/kind on the wire; unstructured (CRD) items do."""
    if rt.is_custom:
        return present(rt, obj)
    return {k: v for k, v in obj.items() if k not in ("apiVersion", "kind")}


def matcher(rt: ResourceType, label_selector: str | None, field_selector: str | None) -> Matcher:
    labels, fields = label_matcher(label_selector), field_matcher(field_selector, rt.field_selectors)
    return lambda obj: labels(obj) and fields(obj)


def success_status(rt: ResourceType, obj: JsonObj, code: int | None = None) -> JsonObj:
    details = {"name": obj["metadata"]["name"], "kind": rt.plural, "uid": obj["metadata"]["uid"]}
    if rt.group:
        details["group"] = rt.group
    status: JsonObj = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}
    if code is not None:
        status["code"] = code
    return status


def _changed_content(rt: ResourceType, new: JsonObj, old: JsonObj) -> bool:
    """Whether a write bumps metadata.generation: spec for built-ins, all but metadata/status for CRDs."""
    if not rt.is_custom:
        return new.get("spec") != old.get("spec")
    skip = {"metadata", "status"} if rt.status_subresource else {"metadata"}
    return {k: v for k, v in new.items() if k not in skip} != {k: v for k, v in old.items() if k not in skip}


@dataclass(frozen=True)
class Change:
    """A write that passed validation and is not stored yet: what admission is shown, and how to store it."""

    operation: Literal["CREATE", "UPDATE", "DELETE"]
    rt: ResourceType
    subresource: str | None
    namespace: str | None
    name: str
    obj: JsonObj | None
    """The object as it will be stored; None for a delete."""
    old: JsonObj | None
    """The stored object an update or delete replaces."""
    commit: Callable[[], JsonObj]
    """Store it; the answer to the request."""


Changes = list[Change]  # an alias: inside Operations, ``list`` is the method


class Operations:
    """get/list on a Store, and the writes as ``Change``s (evict excepted)."""

    def __init__(self, store: Store, validator: Validator) -> None:
        self.store = store
        self.validator = validator

    def get(self, rt: ResourceType, namespace: str | None, name: str) -> JsonObj:
        return present(rt, self._existing(rt, namespace, name))

    def list(self, rt: ResourceType, namespace: str | None, query: dict[str, str]) -> JsonObj:
        """A ``<Kind>List`` filtered by selectors, paginated with ``limit``/``continue``."""
        match = matcher(rt, query.get("labelSelector"), query.get("fieldSelector"))
        items = [o for o in self.store.objects(rt, namespace) if match(o)]
        meta: JsonObj = {"resourceVersion": str(self.store.resource_version)}
        if query.get("continue"):
            token = _decode(query["continue"])
            meta["resourceVersion"] = token["rv"]
            items = [o for o in items if _key(o) > tuple(token["start"])]
        limit = int(query["limit"]) if query.get("limit", "").isdigit() else 0
        if 0 < limit < len(items):
            token = {"rv": meta["resourceVersion"], "start": _key(items[limit - 1])}
            meta["continue"] = _encode(token)
            meta["remainingItemCount"] = len(items) - limit
            items = items[:limit]
        return {
            "kind": f"{rt.kind}List",
            "apiVersion": rt.api_version,
            "metadata": meta,
            "items": [list_item(rt, o) for o in items],
        }

    def create(self, rt: ResourceType, namespace: str | None, body: Any) -> Change:
        obj = self._typed(rt, namespace, body)
        meta = obj["metadata"]
        generate_name(meta)
        if meta.get("resourceVersion"):
            raise internal("resourceVersion should not be set on objects to be created")
        for key in _SERVER_FIELDS:
            meta.pop(key, None)
        if rt.initial_status is not None:
            obj["status"] = copy.deepcopy(dict(rt.initial_status))
            if not obj["status"]:
                del obj["status"]
        apply_defaults(rt, obj)
        self.validator.check(rt, obj)
        # BeforeCreate fills these before admission; insert keeps them.
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=now())
        if rt.tracks_generation:
            meta["generation"] = 1
        return Change(
            "CREATE",
            rt,
            None,
            meta.get("namespace"),
            meta["name"],
            obj,
            None,
            lambda: present(rt, self.store.insert(rt, obj)),
        )

    def update(self, rt: ResourceType, namespace: str | None, name: str, body: Any, subresource: str | None) -> Change:
        obj = self._typed(rt, namespace, body)
        if obj["metadata"].get("name") != name:
            raise bad_request(
                f"the name of the object ({obj['metadata'].get('name', '')}) "
                f"does not match the name on the URL ({name})"
            )
        old = self._existing(rt, namespace, name)
        new = self._update(rt, old, obj, subresource)

        def commit() -> JsonObj:
            if self.store.lookup(rt, namespace, name) is not old:  # written while admission ran
                raise conflict(rt.group, rt.plural, name)
            # A no-op write changes nothing, not even the resourceVersion (it was validated and admitted all the same).
            return present(rt, old if new == old else self.store.replace(rt, new))

        return Change("UPDATE", rt, subresource, namespace, name, new, old, commit)

    def patch(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        body: Any,
        *,
        content_type: str,
        subresource: str | None = None,
    ) -> Change:
        """Apply the patch to the stored object, then update with the result (same checks as PUT)."""
        old = self._existing(rt, namespace, name)
        patched = apply_patch(content_type, copy.deepcopy(present(rt, old)), body, custom=rt.is_custom)
        if not isinstance(patched, dict) or not isinstance(patched.get("metadata"), dict):
            raise ApiError(422, "the patched object is not a Kubernetes object")
        patched["metadata"].setdefault("resourceVersion", old["metadata"]["resourceVersion"])
        return self.update(rt, namespace, name, patched, subresource)

    def delete(self, rt: ResourceType, namespace: str | None, name: str, options: Any) -> Change:
        """Delete honouring preconditions; answers the object, or a Status for most kinds once gone."""
        old = self._existing(rt, namespace, name)
        options = options if isinstance(options, dict) else {}
        for field, label in (("uid", "UID"), ("resourceVersion", "ResourceVersion")):
            wanted = (options.get("preconditions") or {}).get(field)
            if wanted and wanted != old["metadata"][field]:
                current = old["metadata"][field]
                why = f"Precondition failed: {label} in precondition: {wanted}, {label} in object meta: {current}"
                raise conflict(rt.group, rt.plural, name, why)
        orphan = options.get("propagationPolicy") == "Orphan" or options.get("orphanDependents") is True

        def commit() -> JsonObj:
            obj, gone = self.store.delete_object(rt, namespace, name, orphan=orphan)
            if gone and not rt.returns_deleted_object:
                return success_status(rt, obj)
            return present(rt, obj)

        return Change("DELETE", rt, None, namespace, name, None, old, commit)

    def delete_collection(
        self, rt: ResourceType, namespace: str | None, query: dict[str, str], options: Any
    ) -> tuple[JsonObj, Changes]:
        """The matching objects, and a delete of each (one gone by then, collected with its owner, is skipped)."""
        listed = self.list(rt, namespace, {k: v for k, v in query.items() if k in ("labelSelector", "fieldSelector")})
        changes = [
            self.delete(rt, item["metadata"].get("namespace"), item["metadata"]["name"], options)
            for item in listed["items"]
        ]
        return listed, changes

    def evict(self, pods: ResourceType, namespace: str, name: str, body: Any) -> JsonObj:
        """POST pods/{name}/eviction: validate the Eviction, delete the pod, answer 201 Success."""
        pod = self._existing(pods, namespace, name)
        if not isinstance(body, dict):
            raise bad_request("the body of an eviction must be a policy/v1 Eviction object")
        eviction = {**body, "apiVersion": "policy/v1", "kind": "Eviction"}
        errors = self.validator.schema_errors(eviction)
        if errors:
            raise invalid_object("policy", "Eviction", name, errors)
        if (body.get("metadata") or {}).get("name") != name:
            raise bad_request("name in URL does not match name in Eviction object")
        self.delete(pods, namespace, name, body.get("deleteOptions")).commit()
        self.store.evictions.append(copy.deepcopy(eviction))
        return success_status(pods, pod, code=201)

    # --- helpers ---------------------------------------------------------------------------------------

    def _existing(self, rt: ResourceType, namespace: str | None, name: str) -> JsonObj:
        obj = self.store.lookup(rt, namespace, name)
        if obj is None:
            raise not_found(rt.group, rt.plural, name)
        return obj

    def _typed(self, rt: ResourceType, namespace: str | None, body: Any) -> JsonObj:
        """Check (or default) apiVersion/kind and reconcile the namespace like the real handlers."""
        if not isinstance(body, dict):
            raise bad_request(f"the object provided is unrecognized (must be of type {rt.kind})")
        if body.setdefault("apiVersion", rt.api_version) != rt.api_version:
            raise bad_request(
                f"the API version in the data ({body['apiVersion']}) does not match the expected API version "
                f"({rt.api_version})"
            )
        if body.setdefault("kind", rt.kind) != rt.kind:
            raise bad_request(f"the object provided is unrecognized (must be of type {rt.kind}): kind {body['kind']}")
        meta = body.get("metadata")
        if meta is None or not isinstance(meta, dict):
            meta = body["metadata"] = {}
        given = meta.get("namespace") or ""
        if not rt.namespaced:
            meta.pop("namespace", None)
        elif not given:
            meta["namespace"] = namespace
        elif given != namespace:
            raise bad_request("the namespace of the provided object does not match the namespace sent on the request")
        return body

    def _update(self, rt: ResourceType, old: JsonObj, obj: JsonObj, subresource: str | None) -> JsonObj:
        """The object the update would store (``== old`` for a no-op), validated."""
        self._preconditions(rt, old, obj)
        if subresource == "status":
            new = copy.deepcopy(old)
            new.pop("status", None)
            if "status" in obj:
                new["status"] = obj["status"]
        else:
            new = self._main_update(rt, old, obj)
        new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
        if new == old:  # validated when it was stored
            return new
        self.validator.check(rt, new, old)
        self._check_finalizers(rt, new, old)
        return new

    def _preconditions(self, rt: ResourceType, old: JsonObj, obj: JsonObj) -> None:
        meta, old_meta, name = obj["metadata"], old["metadata"], old["metadata"]["name"]
        rv = meta.get("resourceVersion")
        if rv and rv != old_meta["resourceVersion"]:
            raise conflict(rt.group, rt.plural, name)
        if not rv and not rt.unconditional_update:
            error = invalid("metadata.resourceVersion", "0x0", "must be specified for an update")
            raise invalid_object(rt.group, rt.kind, name, [error])
        if meta.get("uid") and meta["uid"] != old_meta["uid"]:
            why = f"Precondition failed: UID in precondition: {meta['uid']}, UID in object meta: {old_meta['uid']}"
            raise conflict(rt.group, rt.plural, name, why)

    def _main_update(self, rt: ResourceType, old: JsonObj, new: JsonObj) -> JsonObj:
        """A PUT of the object: system fields stay; status stays when it has its own subresource."""
        meta, old_meta = new["metadata"], old["metadata"]
        for key in _SERVER_FIELDS:
            meta.pop(key, None)
            if key in old_meta:
                meta[key] = old_meta[key]
        if rt.status_subresource:
            new.pop("status", None)
            if "status" in old:
                new["status"] = copy.deepcopy(old["status"])
        if rt.tracks_generation and _changed_content(rt, new, old):
            meta["generation"] = old_meta.get("generation", 0) + 1
        apply_defaults(rt, new)
        return new

    def _check_finalizers(self, rt: ResourceType, new: JsonObj, old: JsonObj) -> None:
        if not old["metadata"].get("deletionTimestamp"):
            return
        added = set(new["metadata"].get("finalizers") or []) - set(old["metadata"].get("finalizers") or [])
        if added:
            detail = (
                f"no new finalizers can be added if the object is being deleted, found new finalizers {sorted(added)}"
            )
            raise invalid_object(rt.group, rt.kind, old["metadata"]["name"], [forbidden("metadata.finalizers", detail)])


def _key(obj: JsonObj) -> tuple[str, str]:
    return (obj["metadata"].get("namespace", ""), obj["metadata"]["name"])


def _encode(token: JsonObj) -> str:
    return base64.b64encode(json.dumps(token).encode()).decode()


def _decode(token: str) -> JsonObj:
    try:
        decoded: JsonObj = json.loads(base64.b64decode(token))
        return {"rv": str(decoded["rv"]), "start": list(decoded["start"])}
    except (ValueError, KeyError, TypeError) as err:
        raise bad_request("continue key is not valid") from err
