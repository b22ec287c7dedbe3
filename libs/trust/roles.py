"""Who may do what on the bus: one role per kind of client, its permissions built from the subject layout.

Node roles are confined to their own node: they publish and serve only ``gpudra.v1.<node>.…`` and read and
write only their node's KV keys. Cluster roles (the remediation controller) act across nodes. The extender
reads events and nothing else; the operator does what the ``gpudra`` CLI does; only bootstrap may create or
change streams, buckets and consumers. ``docs/security.md`` is this table written out (a test keeps it so).

A process may hold several roles (standalone ``health`` runs the node monitors and the controller); its
permissions are the union. ``local_kube`` adds the standalone Kubernetes store (the ``gpudra_kube`` bucket)
to the roles that use the Kubernetes API; in a cluster they use the API server and never get it.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable

from libs.bus import topology
from libs.bus.topology import (
    BREAKER_KEY,
    COMPUTEDOMAIN_BUCKET,
    COMPUTEDOMAIN_LEASE_PREFIX,
    HEALTH_BUCKET,
    HEALTH_REMEDIATION,
    INVENTORY_BUCKET,
    KUBE_BUCKET,
    LEASE_BUCKET,
    REMEDIATION_BUCKET,
    REMEDIATION_LEASE_PREFIX,
    REMEDIATION_NODE_PREFIX,
    inventory_key,
    taints_key,
)
from libs.events import CLUSTER
from libs.events.catalogue import (
    CircuitBreakerChanged,
    ClaimFailed,
    ClaimPrepared,
    ClaimUnprepared,
    ComputeDomainNodeChanged,
    ComputeDomainStatusChanged,
    DeviceHealthChanged,
    FaultClassified,
    HealthEvent,
    InjectFault,
    InventoryChanged,
    MonitorStatusChanged,
    PrepareChannels,
    PrepareClaims,
    RemediationStateChanged,
    RemediationStepCompleted,
    ResetBreaker,
    ResetGpu,
    ResetRemediation,
    ServiceCrashed,
    SlicesPublished,
    UnprepareChannels,
    UnprepareClaims,
)
from libs.trust.grants import (
    ANY,
    admin,
    call,
    consume,
    inbox,
    kv_read,
    kv_write,
    list_services,
    others_keep_off,
    own_consumers,
    publish_events,
    read_streams,
    serve,
    watch_events,
)
from libs.trust.permissions import Permissions, union


class Role(enum.StrEnum):
    KUBELET_SHIM = "kubelet-shim"
    DISCOVERY = "discovery"
    CLAIM_PREPARATION = "claim-preparation"
    HEALTH_NODE = "health-node"
    COMPUTE_DOMAIN_NODE = "compute-domain-node"
    HEALTH_CONTROLLER = "health-controller"
    COMPUTE_DOMAIN_CONTROLLER = "compute-domain-controller"
    SUPERVISOR = "supervisor"
    BOOTSTRAP = "bootstrap"
    OPERATOR = "operator"
    EXTENDER = "extender"


NODE_ROLES = frozenset(
    {Role.KUBELET_SHIM, Role.DISCOVERY, Role.CLAIM_PREPARATION, Role.HEALTH_NODE, Role.COMPUTE_DOMAIN_NODE}
)
"""Confined to one node: their credentials name it, and their subjects and keys carry its token."""

SERVICE_ROLES: dict[str, tuple[Role, ...]] = {
    "kubelet_shim": (Role.KUBELET_SHIM,),
    "discovery": (Role.DISCOVERY,),
    "claim_preparation": (Role.CLAIM_PREPARATION,),
    "health": (Role.HEALTH_NODE, Role.HEALTH_CONTROLLER),
    "compute_domain": (Role.COMPUTE_DOMAIN_NODE, Role.COMPUTE_DOMAIN_CONTROLLER),
}
"""The roles each service may hold; health's settings (``--role``) pick the node side, the controller or both."""

PRINCIPALS: dict[str, tuple[Role, ...]] = {
    **SERVICE_ROLES,
    "bootstrap": (Role.BOOTSTRAP,),
    "operator": (Role.OPERATOR,),
    "extender": (Role.EXTENDER,),
}
"""Every client name (its inbox prefix's first token) and the roles that name may hold: the services, ``gpudra
bus bootstrap``, the ``gpudra`` CLI and extenders."""

EVENT_STREAMS = tuple(spec.name for spec in topology.STREAMS)


def _local_kube(local_kube: bool) -> Permissions:
    return kv_write(KUBE_BUCKET) if local_kube else Permissions()


def _kubelet_shim(node: str, local_kube: bool) -> Permissions:
    """Asks its node's claim_preparation (GPU claims) and compute_domain (channel claims) to prepare and
    unprepare; reads the node's inventory and the device
    health the controller states for it."""
    return union(
        [
            serve("kubelet_shim", node),
            call(node, PrepareClaims, UnprepareClaims, PrepareChannels, UnprepareChannels),
            kv_read(INVENTORY_BUCKET),
            read_streams(topology.stream_of(DeviceHealthChanged)),
        ]
    )


def _discovery(node: str, local_kube: bool) -> Permissions:
    """Keeps its node's inventory and announces it; reads the taints the controller sets on its devices;
    injects faults into simulated GPUs."""
    return union(
        [
            serve("discovery", node, InjectFault),
            publish_events(node, InventoryChanged, SlicesPublished),
            kv_write(INVENTORY_BUCKET, inventory_key(node)),
            kv_read(HEALTH_BUCKET),
            _local_kube(local_kube),
        ]
    )


def _claim_preparation(node: str, local_kube: bool) -> Permissions:
    """Prepares and unprepares its node's claims, and says so; reads the device health the controller states,
    which the claims' device status reports."""
    return union(
        [
            serve("claim_preparation", node, PrepareClaims, UnprepareClaims),
            publish_events(node, ClaimPrepared, ClaimUnprepared, ClaimFailed),
            read_streams(topology.stream_of(DeviceHealthChanged)),
            _local_kube(local_kube),
        ]
    )


def _health_node(node: str, local_kube: bool) -> Permissions:
    """Reports its node's faults and monitors; resets a GPU when the controller asks."""
    return serve("health", node, ResetGpu) | publish_events(node, HealthEvent, MonitorStatusChanged)


def _compute_domain_node(node: str, local_kube: bool) -> Permissions:
    """Prepares its node's channel claims, runs and reports its IMEX daemons, reads the domains' membership and
    publishes its channel slice."""
    return union(
        [
            serve("compute_domain", node, PrepareChannels, UnprepareChannels),
            publish_events(node, ComputeDomainNodeChanged),
            kv_read(COMPUTEDOMAIN_BUCKET),
            _local_kube(local_kube),
        ]
    )


def _compute_domain_controller(node: str, local_kube: bool) -> Permissions:
    """Domains across nodes: membership follows the nodes' events, state lives in its bucket."""
    return union(
        [
            serve("compute_domain", CLUSTER),
            publish_events(CLUSTER, ComputeDomainStatusChanged),
            read_streams(topology.stream_of(ComputeDomainNodeChanged)),
            kv_write(COMPUTEDOMAIN_BUCKET),
            kv_write(LEASE_BUCKET, f"{COMPUTEDOMAIN_LEASE_PREFIX}>"),
            _local_kube(local_kube),
        ]
    )


def _health_controller(node: str, local_kube: bool) -> Permissions:
    """Remediation across nodes: takes every node's health events from its own durable, states verdicts and
    device health, keeps the books, taints and leases, asks nodes to reset GPUs."""
    return union(
        [
            serve("health", CLUSTER, ResetBreaker, ResetRemediation),
            consume(HEALTH_REMEDIATION),
            publish_events(ANY, FaultClassified, DeviceHealthChanged, RemediationStateChanged),
            publish_events(ANY, RemediationStepCompleted),
            publish_events(CLUSTER, CircuitBreakerChanged),
            call(ANY, ResetGpu, InjectFault),
            kv_read(INVENTORY_BUCKET),
            kv_write(HEALTH_BUCKET, taints_key(ANY)),
            kv_write(REMEDIATION_BUCKET, f"{REMEDIATION_NODE_PREFIX}*"),
            kv_write(REMEDIATION_BUCKET, BREAKER_KEY),
            kv_write(LEASE_BUCKET, f"{REMEDIATION_LEASE_PREFIX}>"),
            _local_kube(local_kube),
        ]
    )


def _supervisor(node: str, local_kube: bool) -> Permissions:
    """Standalone: reports crashed services and waits for services to register."""
    return publish_events(node, ServiceCrashed) | list_services()


def _bootstrap(node: str, local_kube: bool) -> Permissions:
    """Creates and updates streams and buckets: the only JetStream administrator."""
    return admin()


def _operator(node: str, local_kube: bool) -> Permissions:
    """The CLI: reads everything, injects faults (simulated GPUs), resets remediation, edits standalone claims."""
    return union(
        [
            _extender(node, local_kube),
            list_services(),
            call(ANY, InjectFault),
            call(CLUSTER, ResetBreaker, ResetRemediation),
            kv_read(INVENTORY_BUCKET),
            kv_read(HEALTH_BUCKET),
            kv_read(REMEDIATION_BUCKET),
            _local_kube(local_kube),
        ]
    )


def _extender(node: str, local_kube: bool) -> Permissions:
    """Reads events (core subscriptions, or consumers of its own) and nothing else."""
    return watch_events() | own_consumers(*EVENT_STREAMS)


_GRANTS: dict[Role, Callable[[str, bool], Permissions]] = {
    Role.KUBELET_SHIM: _kubelet_shim,
    Role.DISCOVERY: _discovery,
    Role.CLAIM_PREPARATION: _claim_preparation,
    Role.HEALTH_NODE: _health_node,
    Role.COMPUTE_DOMAIN_NODE: _compute_domain_node,
    Role.HEALTH_CONTROLLER: _health_controller,
    Role.COMPUTE_DOMAIN_CONTROLLER: _compute_domain_controller,
    Role.SUPERVISOR: _supervisor,
    Role.BOOTSTRAP: _bootstrap,
    Role.OPERATOR: _operator,
    Role.EXTENDER: _extender,
}


def purpose(role: Role) -> str:
    """What the role is for, in one sentence (the grant's docstring)."""
    return " ".join((_GRANTS[role].__doc__ or "").split())


OWNED_DURABLES: dict[Role, tuple[topology.DurableSpec, ...]] = {Role.HEALTH_CONTROLLER: (HEALTH_REMEDIATION,)}


def permissions(roles: Iterable[Role], *, principal: str, node: str, local_kube: bool = False) -> Permissions:
    """Everything a client holding ``roles`` on ``node`` may do, with replies confined to its own inboxes.

    ``principal`` names the client (the service, ``operator``, ...): its inbox prefix is built from it and
    the node (``grants.inbox_prefix``), on both sides of the connection.
    """
    held = frozenset(roles)
    granted = union(_GRANTS[role](node, local_kube) for role in sorted(held))
    if Role.BOOTSTRAP not in held:
        owned = {durable for role in held for durable in OWNED_DURABLES.get(role, ())}
        granted |= union(others_keep_off(durable) for durable in topology.DURABLES if durable not in owned)
    return granted | inbox(principal, ANY if held.isdisjoint(NODE_ROLES) else node)
