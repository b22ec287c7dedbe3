"""The objects the controller writes for a domain: the workload ResourceClaimTemplate its pods name, and the
Kubernetes Events of its transitions (what ``kubectl describe cd`` and ``kubectl events`` show).

Unlike NVIDIA's driver, no DaemonSet of IMEX pods is rendered: gpudra's node service runs a domain's IMEX daemon
itself when a channel claim of the domain is prepared on the node, so there is no second claim per node, no
pod to schedule before the workload's, and the daemon's readiness reaches the status as an event. The template
carries no finalizer: the domain's own holds the domain until the controller deleted the template, and the
owner reference lets Kubernetes collect it should the controller be gone.
"""

from __future__ import annotations

from typing import Any

from libs.claims.configapi import CHANNEL_KIND
from services.compute_domain.api import API_VERSION, CHANNEL_CLASS, DOMAIN_LABEL, DRIVER, ComputeDomain

CHANNEL_REQUEST = "channel"


def owner_reference(domain: ComputeDomain) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "ComputeDomain",
        "name": domain.metadata.name,
        "uid": domain.metadata.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def workload_claim_template(domain: ComputeDomain) -> dict[str, Any]:
    """``resource.k8s.io/v1`` ResourceClaimTemplate in the domain's namespace: one channel of the domain."""
    meta = domain.metadata
    config = {
        "apiVersion": API_VERSION,
        "kind": CHANNEL_KIND,
        "domainID": meta.uid,
        "allocationMode": domain.spec.channel.allocation_mode,
    }
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaimTemplate",
        "metadata": {
            "name": domain.spec.channel.resource_claim_template.name,
            "namespace": meta.namespace,
            "labels": {DOMAIN_LABEL: meta.uid},
            "ownerReferences": [owner_reference(domain)],
        },
        "spec": {
            "spec": {
                "devices": {
                    "requests": [{"name": CHANNEL_REQUEST, "exactly": {"deviceClassName": CHANNEL_CLASS}}],
                    "config": [{"requests": [CHANNEL_REQUEST], "opaque": {"driver": DRIVER, "parameters": config}}],
                }
            }
        },
    }


REPORTER = "gpudra.io/compute-domain-controller"


def transition_event(
    domain: ComputeDomain, *, ready: bool, reason: str, message: str, now: str, instance: str, suffix: str
) -> dict[str, Any]:
    """``events.k8s.io/v1`` Event about the domain: Normal when it became Ready, Warning when it became NotReady.
    ``now`` is a MicroTime (``2026-12-05T06:00:00.000000Z``); ``suffix`` makes the name unique."""
    meta = domain.metadata
    return {
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        "metadata": {"name": f"{meta.name}.{suffix}", "namespace": meta.namespace},
        "eventTime": now,
        "reportingController": REPORTER,
        "reportingInstance": instance,
        "action": "Ready" if ready else "NotReady",
        "reason": reason,
        "note": message[:1024],
        "type": "Normal" if ready else "Warning",
        "regarding": {
            "apiVersion": API_VERSION,
            "kind": "ComputeDomain",
            "name": meta.name,
            "namespace": meta.namespace,
            "uid": meta.uid,
        },
    }
