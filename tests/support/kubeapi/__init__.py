"""A Kubernetes API server for tests: real HTTP, real client, schema-validated objects.

Usage::

    async with KubeApiServer() as api:            # or the ``kube_api`` pytest fixture
        async with api.api_client() as client:
            await CoreV1Api(client).create_node(...)
        api.store.get("nodes", "node-1")
"""

from .errors import ApiError, FieldError
from .resources import BUILTIN_RESOURCES, ResourceRegistry, ResourceType
from .server import DEFAULT_VERSION, KubeApiServer
from .store import Failure, Store, WatchEvent
from .validation import Validator

__all__ = [
    "BUILTIN_RESOURCES",
    "DEFAULT_VERSION",
    "ApiError",
    "Failure",
    "FieldError",
    "KubeApiServer",
    "ResourceRegistry",
    "ResourceType",
    "Store",
    "Validator",
    "WatchEvent",
]
