"""A domain's status from its members: Ready when the wanted number of nodes joined and every daemon is ready.

The reason says what is missing (``WaitingForNodes``: "2 of 4 nodes joined"; ``NodeNotReady``: the node and
its daemon's words), so a NotReady domain explains itself in ``kubectl get`` rather than in a log. The
condition's ``lastTransitionTime`` moves only when its status does, as ``metav1.Condition`` asks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

from services.compute_domain.api import (
    ComputeDomain,
    ComputeDomainSpec,
    ComputeDomainStatus,
    Condition,
    NodeStatus,
    Readiness,
)
from services.compute_domain.roster import Member, Roster

READY = "Ready"


def readiness(spec: ComputeDomainSpec, members: Sequence[Member]) -> tuple[Readiness, str, str]:
    """(status, reason, message)."""
    if len(members) < spec.num_nodes:
        return "NotReady", "WaitingForNodes", f"{len(members)} of {spec.num_nodes} nodes joined"
    waiting = sorted((member for member in members if not member.ready), key=lambda member: member.node)
    if waiting:
        message = "; ".join(f"{member.node}: {member.reason or 'IMEX daemon not ready'}" for member in waiting)
        return "NotReady", "NodeNotReady", message
    return "Ready", "AllNodesReady", f"{len(members)} of {spec.num_nodes or len(members)} nodes ready"


def domain_status(
    spec: ComputeDomainSpec,
    members: Sequence[Member],
    previous: ComputeDomainStatus,
    *,
    now: str,
    generation: int,
) -> ComputeDomainStatus:
    """The status to write; equal to ``previous`` when nothing changed (so nothing is written)."""
    state, reason, message = readiness(spec, members)
    status: Literal["True", "False"] = "True" if state == "Ready" else "False"
    before = next((c for c in previous.conditions if c.type == READY), None)
    since = before.last_transition_time if before is not None and before.status == status else now
    condition = Condition(
        type=READY,
        status=status,
        reason=reason,
        message=message,
        last_transition_time=since,
        observed_generation=generation,
    )
    nodes = [
        NodeStatus(
            name=member.node,
            ip_address=member.ip_address,
            clique_id=member.clique_id,
            index=member.index,
            status="Ready" if member.ready else "NotReady",
        )
        for member in sorted(members, key=lambda member: member.index)
    ]
    others = [c for c in previous.conditions if c.type != READY]
    return ComputeDomainStatus(status=state, conditions=[condition, *others], nodes=nodes)


def roster_of(domain: ComputeDomain, members: Sequence[Member], refused: Mapping[str, str]) -> Roster:
    """What the nodes read: the members in slot order and the refusals, with the domain's namespace (a channel
    claim must be in it) and its readiness."""
    meta = domain.metadata
    return Roster(
        uid=meta.uid,
        namespace=meta.namespace,
        name=meta.name,
        num_nodes=domain.spec.num_nodes,
        allocation_mode=domain.spec.channel.allocation_mode,
        status=readiness(domain.spec, members)[0],
        members=sorted(members, key=lambda member: member.index),
        refused=dict(sorted(refused.items())),
    )
