"""Multi-node NVLink ComputeDomains: readiness of a domain and of each member node."""

from __future__ import annotations

from typing import Literal

from libs.events.base import Event

Readiness = Literal["Ready", "NotReady"]


class ComputeDomainStatusChanged(Event, frozen=True, kw_only=True):
    domain = "computedomains"
    topic = "status"
    summary = "A ComputeDomain became Ready or NotReady."

    namespace: str
    name: str
    uid: str
    status: Readiness
    ready_nodes: int
    num_nodes: int
    reason: str = ""

    def ce_subject(self) -> str:
        return self.uid


class ComputeDomainNodeChanged(Event, frozen=True, kw_only=True):
    domain = "computedomains"
    topic = "nodes"
    summary = "A node joined, left or changed readiness in a ComputeDomain (its IMEX daemon)."

    domain_uid: str
    clique_id: str
    index: int
    status: Readiness
    ip_address: str = ""
    reason: str = ""
    member: bool = True
    """False when the node left the domain (its last channel claim of it went away)."""

    def ce_subject(self) -> str:
        return self.domain_uid
