"""The ``ComputeDomain`` custom resource (``resource.gpudra.io/v1beta1``), as the controller reads and writes it.

A ComputeDomain asks for a set of nodes whose GPUs share memory over multi-node NVLink (one IMEX domain): its
spec says how many nodes and how workloads reach it (the ResourceClaimTemplate the controller creates for
channel claims); its status says which nodes joined, from which NVLink clique, and whether the domain is
Ready. The spec is immutable (a CEL rule in the CRD, ``deploy/kustomize/base/computedomain-crd.yaml``), as in
NVIDIA's driver: changing the size of a running domain would mean restarting every member's IMEX daemon.

``ComputeDomainClique`` lists the IMEX daemons of one clique of one domain (named ``<domainUID>.<cliqueID>``);
each node's service writes only its own entry, so members never overwrite each other's status (the reference's
#1050). The structs decode what the API server stores, with the field names it uses.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from libs.claims.configapi import AllocationMode

GROUP = "resource.gpudra.io"
VERSION = "v1beta1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "ComputeDomain"
CLIQUE_KIND = "ComputeDomainClique"
DRIVER = "compute-domain.gpudra.io"
"""The DRA driver of channel and daemon devices."""
DOMAIN_LABEL = f"{GROUP}/computeDomain"
"""On the objects the controller owns for a domain (and on member nodes): the domain's UID."""
FINALIZER = DOMAIN_LABEL
CHANNEL_CLASS = "compute-domain-default-channel.gpudra.io"
"""The DeviceClass of a domain's workload claims: channel 0 of the compute-domain driver."""
MAX_NODES_PER_CLIQUE = 18
"""An NVLink domain of GB200/GB300 NVL72 racks: 18 compute trays (the IMEX daemon's name slots)."""

Readiness = Literal["Ready", "NotReady"]


class ApiObjectError(ValueError):
    """A stored object that is not a usable ComputeDomain (the API server validates; a store may not)."""


class TemplateRef(msgspec.Struct, frozen=True, kw_only=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=253)]


class ChannelSpec(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    resource_claim_template: TemplateRef
    allocation_mode: AllocationMode = "Single"


class ComputeDomainSpec(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    num_nodes: Annotated[int, msgspec.Meta(ge=0)] = 0
    channel: ChannelSpec


class Condition(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """A ``metav1.Condition``."""

    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str = ""
    last_transition_time: str
    observed_generation: int = 0


class NodeStatus(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    name: str
    ip_address: str
    clique_id: str = msgspec.field(name="cliqueID")
    index: int
    status: Readiness = "NotReady"


class ComputeDomainStatus(msgspec.Struct, frozen=True, kw_only=True):
    status: Readiness = "NotReady"
    conditions: list[Condition] = msgspec.field(default_factory=list)
    nodes: list[NodeStatus] = msgspec.field(default_factory=list)


class ObjectMeta(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """The metadata fields the controller reads."""

    name: str
    namespace: str
    uid: str
    generation: int = 0
    resource_version: str = ""
    deletion_timestamp: str | None = None
    finalizers: list[str] = msgspec.field(default_factory=list)


class ComputeDomain(msgspec.Struct, frozen=True, kw_only=True):
    metadata: ObjectMeta
    spec: ComputeDomainSpec
    status: ComputeDomainStatus = msgspec.field(default_factory=ComputeDomainStatus)

    def __str__(self) -> str:
        return f"ComputeDomain {self.metadata.namespace}/{self.metadata.name}"


def decode_domain(obj: dict[str, Any]) -> ComputeDomain:
    """The typed domain, or ``ApiObjectError`` naming the object and the field."""
    meta = obj.get("metadata") or {}
    where = f"ComputeDomain {meta.get('namespace', '?')}/{meta.get('name', '?')}"
    if obj.get("apiVersion") != API_VERSION or obj.get("kind") != KIND:
        raise ApiObjectError(f"{where}: not a {API_VERSION} {KIND}")
    try:
        return msgspec.convert(obj, ComputeDomain, strict=False)
    except msgspec.ValidationError as exc:
        raise ApiObjectError(f"{where}: {exc}") from None


def status_object(status: ComputeDomainStatus) -> dict[str, Any]:
    """The status as the API server stores it (for the status subresource)."""
    encoded: dict[str, Any] = msgspec.to_builtins(status)
    return encoded
