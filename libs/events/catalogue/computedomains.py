"""Multi-node NVLink ComputeDomains: readiness of a domain and of each member node."""

from __future__ import annotations

from typing import Literal

from libs.events.base import Command, Event, Reply
from libs.events.catalogue.claims import ClaimPrepareResult, ClaimRef, ClaimUnprepareResult

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


class PrepareChannelsReply(Reply, frozen=True, kw_only=True):
    results: dict[str, ClaimPrepareResult]


class PrepareChannels(Command, frozen=True, kw_only=True):
    """The kubelet shim's second driver (``compute-domain.gpudra.io``) forwards its prepare calls here: the same
    shape as ``PrepareClaims``, served by the node's compute_domain service instead of claim_preparation."""

    service = "computedomains"
    endpoint = "prepare"
    reply = PrepareChannelsReply
    summary = "NodePrepareResources for the IMEX channel claims of one kubelet call."

    claims: list[ClaimRef]


class UnprepareChannelsReply(Reply, frozen=True, kw_only=True):
    results: dict[str, ClaimUnprepareResult]


class UnprepareChannels(Command, frozen=True, kw_only=True):
    service = "computedomains"
    endpoint = "unprepare"
    reply = UnprepareChannelsReply
    summary = "NodeUnprepareResources for the IMEX channel claims of one kubelet call."

    claims: list[ClaimRef]
