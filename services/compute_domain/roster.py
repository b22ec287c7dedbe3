"""A domain's roster: the members the controller admitted (each with its IMEX name slot) and the nodes it
refused, as one KV entry every node reads (bucket ``gpudra_computedomains``, key ``domains.<domain UID>``).

Nodes report (``ComputeDomainNodeChanged``); the controller decides. Admission follows the stream's order, so
every replica decides the same and a new leader agrees with the old one; a node learns its slot, its peers'
addresses and a refusal from this entry, never by asking another node. Only the leader writes it, and only
when it changes.
"""

from __future__ import annotations

import re
from typing import Annotated

import msgspec

from libs.claims.configapi import AllocationMode
from libs.events.catalogue.computedomains import Readiness

ROSTER_PREFIX = "domains."
_UID = re.compile(r"[a-z0-9][-a-z0-9]{0,62}")


class Member(msgspec.Struct, frozen=True, kw_only=True):
    """One node's daemon in a domain, as the node reports it and the controller admitted it."""

    node: str
    ip_address: str
    clique_id: str
    index: Annotated[int, msgspec.Meta(ge=0)]
    ready: bool = False
    reason: str = ""
    """Why it is not ready (the daemon's own words), empty when ready."""


class Roster(msgspec.Struct, frozen=True, kw_only=True):
    uid: str
    namespace: str
    name: str
    num_nodes: int
    allocation_mode: AllocationMode
    status: Readiness
    members: list[Member] = msgspec.field(default_factory=list)
    refused: dict[str, str] = msgspec.field(default_factory=dict)
    """Node → why it may not join (another clique, no NVLink fabric, a full clique)."""

    def member(self, node: str) -> Member | None:
        return next((member for member in self.members if member.node == node), None)

    def decided(self, node: str) -> bool:
        """The controller admitted or refused ``node``."""
        return node in self.refused or self.member(node) is not None


def roster_key(uid: str) -> str:
    if not _UID.fullmatch(uid):
        raise ValueError(f"domain UID {uid!r} is not a Kubernetes UID")
    return ROSTER_PREFIX + uid


def encode_roster(roster: Roster) -> bytes:
    return msgspec.json.encode(roster)


def decode_roster(data: bytes) -> Roster:
    """``ValueError`` naming the problem for an entry that is not a roster."""
    try:
        return msgspec.json.decode(data, type=Roster)
    except msgspec.DecodeError as exc:
        raise ValueError(f"not a compute-domain roster: {exc}") from None
