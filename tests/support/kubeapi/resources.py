"""The table of served resources, and how a CustomResourceDefinition adds to it.

Each behaviour that differs between kinds in kube-apiserver (scope, status subresource,
generation tracking, extra field selectors, what create does to ``status``) is a field
here, so the verb code in ``operations`` stays one code path for every kind.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import JsonObj


@dataclass(frozen=True)
class ResourceType:
    """One served group/version/resource."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    status_subresource: bool = False
    tracks_generation: bool = True
    # Field selectors beyond metadata.name / metadata.namespace, as dotted paths.
    field_selectors: tuple[str, ...] = ()
    # None keeps what the client sent on create; a mapping replaces it (empty: drop status).
    initial_status: Mapping[str, Any] | None = None
    name_is_label: bool = False
    # Only CRDs leave this False: updates of custom objects must name a resourceVersion.
    unconditional_update: bool = True
    returns_deleted_object: bool = False
    # The CRD's openAPIV3Schema; None for built-in kinds (validated with kubernetes-validate).
    crd_schema: JsonObj | None = field(default=None, compare=False)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def storage_key(self) -> tuple[str, str]:
        """Versions of one group/resource share storage (CRD conversion strategy None)."""
        return (self.group, self.plural)

    @property
    def qualified(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def is_custom(self) -> bool:
        return self.crd_schema is not None


_POD_FIELDS = (
    "spec.nodeName",
    "spec.restartPolicy",
    "spec.schedulerName",
    "spec.serviceAccountName",
    "status.phase",
    "status.podIP",
    "status.nominatedNodeName",
)

BUILTIN_RESOURCES: tuple[ResourceType, ...] = (
    ResourceType(
        "",
        "v1",
        "namespaces",
        "Namespace",
        namespaced=False,
        status_subresource=True,
        tracks_generation=False,
        initial_status={"phase": "Active"},
        name_is_label=True,
    ),
    ResourceType(
        "",
        "v1",
        "nodes",
        "Node",
        namespaced=False,
        status_subresource=True,
        tracks_generation=False,
    ),
    ResourceType(
        "",
        "v1",
        "pods",
        "Pod",
        namespaced=True,
        status_subresource=True,
        field_selectors=_POD_FIELDS,
        initial_status={"phase": "Pending"},
        returns_deleted_object=True,
    ),
    ResourceType("coordination.k8s.io", "v1", "leases", "Lease", namespaced=True, tracks_generation=False),
    ResourceType("events.k8s.io", "v1", "events", "Event", namespaced=True, tracks_generation=False),
    ResourceType(
        "resource.k8s.io",
        "v1",
        "resourceslices",
        "ResourceSlice",
        namespaced=False,
        field_selectors=("spec.nodeName", "spec.driver"),
    ),
    ResourceType(
        "resource.k8s.io",
        "v1",
        "resourceclaims",
        "ResourceClaim",
        namespaced=True,
        status_subresource=True,
        initial_status={},
    ),
    ResourceType("resource.k8s.io", "v1", "deviceclasses", "DeviceClass", namespaced=False),
    ResourceType("resource.k8s.io", "v1", "resourceclaimtemplates", "ResourceClaimTemplate", namespaced=True),
    ResourceType(
        "admissionregistration.k8s.io",
        "v1",
        "validatingwebhookconfigurations",
        "ValidatingWebhookConfiguration",
        namespaced=False,
    ),
    ResourceType(
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        namespaced=False,
        status_subresource=True,
    ),
)

DEVICE_TAINT_RULES = ResourceType(
    "resource.k8s.io", "v1beta2", "devicetaintrules", "DeviceTaintRule", namespaced=False, status_subresource=True
)
"""Served by Kubernetes 1.36 only with the gate DRADeviceTaintRules (beta, off by default) on: a test that wants
it sets ``kube_api.version`` to 1.36 and adds it (``kube_api.registry.add``)."""

CRD_KEY = ("apiextensions.k8s.io", "customresourcedefinitions")


def crd_resource_types(crd: JsonObj) -> list[ResourceType]:
    """The resources a CustomResourceDefinition serves: one per served version."""
    spec = crd["spec"]
    names = spec["names"]
    served = [v for v in spec.get("versions", []) if v.get("served")]
    return [
        ResourceType(
            spec["group"],
            v["name"],
            names["plural"],
            names["kind"],
            spec.get("scope") == "Namespaced",
            status_subresource="status" in (v.get("subresources") or {}),
            field_selectors=tuple(f["jsonPath"].lstrip(".") for f in v.get("selectableFields") or []),
            initial_status={} if "status" in (v.get("subresources") or {}) else None,
            unconditional_update=False,
            crd_schema=(v.get("schema") or {}).get("openAPIV3Schema") or {"type": "object"},
        )
        for v in served
    ]


class ResourceRegistry:
    """Served resources by (group, version, plural), the lookup every request starts with."""

    def __init__(self, types: Iterable[ResourceType] = BUILTIN_RESOURCES) -> None:
        self._types: dict[tuple[str, str, str], ResourceType] = {}
        for rt in types:
            self.add(rt)

    def add(self, rt: ResourceType) -> None:
        self._types[(rt.group, rt.version, rt.plural)] = rt

    def remove(self, group: str, plural: str) -> None:
        for key in [k for k in self._types if (k[0], k[2]) == (group, plural)]:
            del self._types[key]

    def lookup(self, group: str, version: str, plural: str) -> ResourceType | None:
        return self._types.get((group, version, plural))

    def all(self) -> list[ResourceType]:
        return list(self._types.values())

    def resolve(self, resource: str) -> ResourceType:
        """Find a resource by ``plural`` or ``plural.group`` (kubectl style), first version served."""
        plural, _, group = resource.partition(".")
        found = [rt for rt in self._types.values() if rt.plural == plural and (not group or rt.group == group)]
        if not found:
            raise KeyError(f"resource {resource!r} is not served")
        if len({rt.group for rt in found}) > 1:
            raise KeyError(f"resource {resource!r} is ambiguous; use plural.group")
        return found[0]

    def for_kind(self, api_version: str, kind: str) -> ResourceType:
        group, _, version = api_version.rpartition("/")
        for rt in self._types.values():
            if (rt.group, rt.version, rt.kind) == (group, version, kind):
                return rt
        raise KeyError(f"kind {kind} in {api_version} is not served")

    def group_versions(self) -> dict[str, list[str]]:
        """group -> served versions, in registration order (the first one is preferred)."""
        out: dict[str, list[str]] = {}
        for group, version, _ in self._types:
            versions = out.setdefault(group, [])
            if version not in versions:
                versions.append(version)
        return out

    def in_group_version(self, group: str, version: str) -> list[ResourceType]:
        return [rt for rt in self._types.values() if (rt.group, rt.version) == (group, version)]
