"""Who may join a domain, and in which IMEX name slot.

One domain is one NVLink clique: the first member's clique is the domain's, and a node of another clique (or
with no NVLink fabric at all) is refused with a reason rather than left to fail inside IMEX. Each member of a
clique gets the smallest free slot (0..17): the IMEX daemons name each other by slot, so a member keeps its slot
for as long as it stays.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from services.compute_domain.api import MAX_NODES_PER_CLIQUE
from services.compute_domain.roster import Member


class Refused(ValueError):
    """A node that cannot join; the message says why, naming the node."""


def domain_clique(members: Iterable[Member]) -> str:
    """The clique of the domain: its first member's ("" before anyone joined)."""
    return next((member.clique_id for member in members), "")


def admit(node: str, clique_id: str, members: Mapping[str, Member]) -> int:
    """The slot ``node`` gets (its own if it is a member already); ``Refused`` when it cannot join."""
    if node in members:
        return members[node].index
    if not clique_id:
        raise Refused(f"node {node} has no NVLink fabric (no clique id): it cannot join a compute domain")
    wanted = domain_clique(members.values())
    if wanted and clique_id != wanted:
        raise Refused(f"node {node} is in NVLink clique {clique_id}, the domain's is {wanted}")
    taken = {member.index for member in members.values()}
    free = next((slot for slot in range(MAX_NODES_PER_CLIQUE) if slot not in taken), None)
    if free is None:
        raise Refused(f"node {node}: the domain's clique {wanted} is full ({MAX_NODES_PER_CLIQUE} nodes)")
    return free
