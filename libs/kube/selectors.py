"""Equality selectors over labels and fields, as query strings for the cluster and as predicates locally.

gpudra only ever selects by equality (``spec.nodeName=node-a``, ``spec.driver=gpu.gpudra.io``, a label), so a
selector is a plain mapping. The standalone store refuses a field the real server does not index, with the real
server's words, so a query that works locally works on a cluster.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from libs.kube.errors import BadRequest
from libs.kube.resources import Obj, Resource

Selector = Mapping[str, str]

ALWAYS_SELECTABLE = ("metadata.name", "metadata.namespace")


def selector_string(selector: Selector | None) -> str:
    """``a=1,b=2`` in a stable order."""
    return ",".join(f"{key}={value}" for key, value in sorted((selector or {}).items()))


def check_fields(resource: Resource, fields: Selector | None) -> None:
    for path in fields or {}:
        if path not in ALWAYS_SELECTABLE and path not in resource.field_selectors:
            raise BadRequest(resource.kind, f"field label not supported: {path}")


def field_value(obj: Obj, path: str) -> str:
    """The string a field selector compares with: a missing field reads as "", booleans as Go prints them."""
    value: Any = obj
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def selected(obj: Obj, fields: Selector | None, labels: Selector | None) -> bool:
    object_labels = (obj.get("metadata") or {}).get("labels") or {}
    return all(field_value(obj, path) == value for path, value in (fields or {}).items()) and all(
        object_labels.get(key) == value for key, value in (labels or {}).items()
    )
