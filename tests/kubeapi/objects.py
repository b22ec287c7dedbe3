"""Builders of valid objects for the API test server's own tests."""

from __future__ import annotations

import json
from typing import Any

Obj = dict[str, Any]
DRIVER = "gpu.example.com"


def node(name: str, **labels: str) -> Obj:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels}}


def pod(name: str, node_name: str | None = None, namespace: str = "default", **labels: str) -> Obj:
    spec: Obj = {"containers": [{"name": "main", "image": "busybox"}]}
    if node_name:
        spec["nodeName"] = node_name
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": spec,
    }


def device(name: str, **attributes: Obj) -> Obj:
    return {"name": name, "attributes": attributes or {"model": {"string": "H100"}}}


def resource_slice(name: str, node_name: str, *devices: Obj, driver: str = DRIVER, owner: Obj | None = None) -> Obj:
    meta: Obj = {"name": name}
    if owner is not None:
        meta["ownerReferences"] = [
            {"apiVersion": "v1", "kind": "Node", "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"]}
        ]
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceSlice",
        "metadata": meta,
        "spec": {
            "driver": driver,
            "nodeName": node_name,
            "pool": {"name": node_name, "generation": 1, "resourceSliceCount": 1},
            "devices": list(devices) or [device("gpu-0")],
        },
    }


def resource_claim(name: str, namespace: str = "default") -> Obj:
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"devices": {"requests": [{"name": "gpu", "exactly": {"deviceClassName": "gpu.example.com"}}]}},
    }


def status_of(error: BaseException) -> Obj:
    """The Status body of a kubernetes-asyncio ApiException."""
    body: Obj = json.loads(getattr(error, "body", None) or b"{}")
    return body
