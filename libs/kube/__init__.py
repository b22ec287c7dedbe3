"""Kubernetes access behind a narrow port: the cluster adapter, the standalone store, the slice publisher.

The cluster adapter is imported on first use: kubernetes-asyncio and aiohttp cost a standalone process about
40 MB of memory it would never use.
"""

from typing import TYPE_CHECKING, Any

from libs.kube.errors import (
    AlreadyExists,
    BadRequest,
    Conflict,
    Expired,
    Forbidden,
    Invalid,
    KubeError,
    NotFound,
    TooManyRequests,
    Unavailable,
)
from libs.kube.local import LocalKube
from libs.kube.object_rules import kube_time
from libs.kube.port import KubeApi, ObjectList, WatchEvent
from libs.kube.resources import (
    DEVICE_CLASSES,
    DEVICE_TAINT_RULES,
    LEASES,
    NODES,
    PODS,
    RESOURCE_CLAIMS,
    RESOURCE_SLICES,
    Obj,
    Resource,
    custom_resource,
)
from libs.kube.settings import KubeconfigSetting, KubeModeSetting, KubeSettings, open_kube, resolve_mode

if TYPE_CHECKING:
    from libs.kube.cluster import ClusterKube, KubeConfigError


def __getattr__(name: str) -> Any:
    if name in ("ClusterKube", "KubeConfigError"):
        from libs.kube import cluster

        return getattr(cluster, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DEVICE_CLASSES",
    "DEVICE_TAINT_RULES",
    "LEASES",
    "NODES",
    "PODS",
    "RESOURCE_CLAIMS",
    "RESOURCE_SLICES",
    "AlreadyExists",
    "BadRequest",
    "ClusterKube",
    "Conflict",
    "Expired",
    "Forbidden",
    "Invalid",
    "KubeApi",
    "KubeConfigError",
    "KubeError",
    "KubeModeSetting",
    "KubeSettings",
    "KubeconfigSetting",
    "LocalKube",
    "NotFound",
    "Obj",
    "ObjectList",
    "Resource",
    "TooManyRequests",
    "Unavailable",
    "WatchEvent",
    "custom_resource",
    "kube_time",
    "open_kube",
    "resolve_mode",
]
