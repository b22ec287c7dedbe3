"""The Kubernetes resources gpudra uses, described once for both adapters.

A ``Resource`` carries what differs between kinds in kube-apiserver and matters to a caller: the URL
(group/version/plural, scope), whether status has its own subresource, which field selectors the server indexes.
The standalone store reads the same flags, so both adapters agree on what a write may change.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from libs.kube.errors import Invalid

Obj = dict[str, Any]

_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


def is_dns_label(text: str) -> bool:
    """Whether ``text`` is an RFC 1123 label (what Kubernetes requires of namespaces, request and device names).

    ``fullmatch``: with ``match`` and ``$``, a trailing newline would pass."""
    return len(text) <= 63 and _DNS_LABEL.fullmatch(text) is not None


@dataclass(frozen=True)
class Resource:
    """One served group/version/resource."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    status_subresource: bool = False
    tracks_generation: bool = True
    field_selectors: tuple[str, ...] = ()
    # Custom resources: updates must name a resourceVersion, and generation follows all non-status content.
    custom: bool = False

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        """``plural.group`` as kubectl and RBAC rules name it."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def describe(self, name: str, namespace: str | None = None) -> str:
        """ "ResourceClaim default/train-0" or "Node node-a": the object as a log line or an error names it."""
        return f"{self.kind} {namespace}/{name}" if namespace else f"{self.kind} {name}"


RESOURCE_SLICES = Resource(
    "resource.k8s.io", "v1", "resourceslices", "ResourceSlice", False, field_selectors=("spec.nodeName", "spec.driver")
)
RESOURCE_CLAIMS = Resource("resource.k8s.io", "v1", "resourceclaims", "ResourceClaim", True, status_subresource=True)
DEVICE_CLASSES = Resource("resource.k8s.io", "v1", "deviceclasses", "DeviceClass", False)
DEVICE_TAINT_RULES = Resource("resource.k8s.io", "v1beta2", "devicetaintrules", "DeviceTaintRule", False)
"""Served from Kubernetes 1.36 where the gate DRADeviceTaintRules (beta, off by default) is on."""
NODES = Resource("", "v1", "nodes", "Node", False, status_subresource=True, tracks_generation=False)
PODS = Resource(
    "",
    "v1",
    "pods",
    "Pod",
    True,
    status_subresource=True,
    field_selectors=(
        "spec.nodeName",
        "spec.restartPolicy",
        "spec.schedulerName",
        "spec.serviceAccountName",
        "status.phase",
        "status.podIP",
        "status.nominatedNodeName",
    ),
)
LEASES = Resource("coordination.k8s.io", "v1", "leases", "Lease", True, tracks_generation=False)
EVENTS = Resource("events.k8s.io", "v1", "events", "Event", True, tracks_generation=False)


def custom_resource(
    group: str, version: str, plural: str, kind: str, *, namespaced: bool = True, status_subresource: bool = True
) -> Resource:
    """A CRD's resource (ComputeDomains); the CRD itself is installed by the deployment, not by the services."""
    return Resource(group, version, plural, kind, namespaced, status_subresource=status_subresource, custom=True)


def object_name(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("name") or "")


def object_namespace(resource: Resource, obj: Obj) -> str | None:
    """None for cluster-scoped kinds, whatever the object says (the server drops it too)."""
    if not resource.namespaced:
        return None
    return str((obj.get("metadata") or {}).get("namespace") or "") or None


def check_object(resource: Resource, obj: Obj) -> tuple[str, str | None]:
    """(name, namespace) of an object about to be written; Invalid when it cannot be the ``resource`` kind.

    Both adapters call this first, so a malformed object fails the same way with or without a cluster.
    """
    name, namespace = object_name(obj), object_namespace(resource, obj)
    what = resource.describe(name or "<unnamed>", namespace)
    problems = []
    if obj.get("apiVersion") != resource.api_version or obj.get("kind") != resource.kind:
        problems.append(
            f"apiVersion/kind is {obj.get('apiVersion')!r}/{obj.get('kind')!r}, "
            f"expected {resource.api_version!r}/{resource.kind!r}"
        )
    if not name:
        problems.append("metadata.name is required")
    elif len(name) > 253 or not _DNS_SUBDOMAIN.fullmatch(name):
        problems.append(f"metadata.name {name!r} is not a DNS subdomain")
    if resource.namespaced and not (namespace and is_dns_label(namespace)):
        problems.append(f"metadata.namespace {namespace!r} must be a DNS label for a namespaced {resource.kind}")
    if problems:
        raise Invalid(what, "; ".join(problems))
    return name, namespace
