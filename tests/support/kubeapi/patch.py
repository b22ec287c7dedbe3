"""The three patch formats clients send: JSON merge, strategic merge and JSON patch.

Strategic merge is a merge patch plus per-field list rules that Go reads from struct tags.
Only the lists the project is likely to touch merge by key here; every other list is
replaced, which is also what strategic merge does for lists without a patch strategy.
"""

from __future__ import annotations

import copy
from typing import Any

from .errors import ApiError, JsonObj, bad_request

MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"

# Field name -> merge key (None: a list of scalars merged as a set), from the Go struct tags.
_MERGE_KEYS: dict[str, str | None] = {
    "conditions": "type",
    "ownerReferences": "uid",
    "finalizers": None,
    "containers": "name",
    "initContainers": "name",
    "volumes": "name",
    "env": "name",
    "reservedFor": "uid",
    "addresses": "type",
}


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge recursively, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _merge_list(name: str, current: Any, patch: list[Any]) -> list[Any]:
    key = _MERGE_KEYS[name]
    items = list(current) if isinstance(current, list) else []
    if key is None:
        return items + [v for v in patch if v not in items]
    for entry in patch:
        if not isinstance(entry, dict) or key not in entry:
            raise bad_request(f"map: {entry} does not contain declared merge key: {key}")
        index = next((i for i, item in enumerate(items) if item.get(key) == entry[key]), None)
        if entry.get("$patch") == "delete":
            if index is not None:
                items.pop(index)
        elif index is None:
            items.append(strategic_merge_patch({}, entry))
        else:
            items[index] = strategic_merge_patch(items[index], entry)
    return items


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    """Merge patch plus merge-by-key lists, ``$patch: delete|replace`` and ``$deleteFromPrimitiveList``."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            result[field] = [v for v in result.get(field) or [] if v not in value]
        elif key.startswith("$"):
            continue  # $setElementOrder, $retainKeys: ordering hints only
        elif value is None:
            result.pop(key, None)
        elif isinstance(value, list) and key in _MERGE_KEYS:
            result[key] = _merge_list(key, result.get(key), value)
        else:
            result[key] = strategic_merge_patch(result.get(key), value)
    return result


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise bad_request(f"JSON pointer must start with '/': {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _parent(doc: Any, parts: list[str]) -> Any:
    node = doc
    for part in parts[:-1]:
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


def _get(doc: Any, path: str) -> Any:
    node = doc
    for part in _pointer(path):
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


def _add(doc: Any, path: str, value: Any) -> Any:
    parts = _pointer(path)
    if not parts:
        return value
    parent, last = _parent(doc, parts), parts[-1]
    if isinstance(parent, list):
        parent.insert(len(parent) if last == "-" else int(last), value)
    else:
        parent[last] = value
    return doc


def _remove(doc: Any, path: str) -> Any:
    parts = _pointer(path)
    parent, last = _parent(doc, parts), parts[-1]
    del parent[int(last) if isinstance(parent, list) else last]
    return doc


def _apply_op(doc: Any, op: JsonObj) -> Any:
    kind, path = op.get("op"), op.get("path", "")
    if kind == "add":
        return _add(doc, path, copy.deepcopy(op["value"]))
    if kind == "remove":
        return _remove(doc, path)
    if kind == "replace":
        _get(doc, path)  # the target must exist
        return _add(_remove(doc, path), path, copy.deepcopy(op["value"]))
    if kind in ("move", "copy"):
        value = copy.deepcopy(_get(doc, op["from"]))
        if kind == "move":
            doc = _remove(doc, op["from"])
        return _add(doc, path, value)
    if kind == "test":
        if _get(doc, path) != op.get("value"):
            raise ValueError(f"testing value {path} failed")
        return doc
    raise ValueError(f"Unexpected kind: {kind}")


def json_patch(target: JsonObj, ops: Any) -> Any:
    """RFC 6902. A body that is not a list is a 400; an op that cannot apply is a 422."""
    if not isinstance(ops, list) or not all(isinstance(op, dict) for op in ops):
        raise bad_request("json: cannot unmarshal object into Go value of type jsonpatch.Patch")
    doc: Any = copy.deepcopy(target)
    for op in ops:
        try:
            doc = _apply_op(doc, op)
        except (KeyError, IndexError, ValueError, TypeError) as err:
            raise ApiError(422, f"the server rejected our request due to an error in our request: {err}") from err
    return doc


def apply_patch(content_type: str, target: JsonObj, body: Any, *, custom: bool) -> Any:
    """Dispatch on the Content-Type; custom resources do not support strategic merge (415)."""
    if content_type == JSON_PATCH:
        return json_patch(target, body)
    if content_type == MERGE_PATCH or (content_type == STRATEGIC_MERGE_PATCH and not custom):
        if not isinstance(body, dict):
            raise bad_request("patch body must be a JSON object")
        merge = merge_patch if content_type == MERGE_PATCH else strategic_merge_patch
        return merge(target, body)
    accepted = [JSON_PATCH, MERGE_PATCH] + ([] if custom else [STRATEGIC_MERGE_PATCH])
    raise ApiError(
        415,
        f"the body of the request was in an unknown format - accepted media types include: {', '.join(accepted)}",
    )
