"""This node's NVLink clique, ``<clusterUUID>.<cliqueId>``, the scope of one IMEX ensemble.

All GPUs of a node sit in one clique; GPUs that report different ones mean a broken fabric registration, and
running IMEX with either would join the wrong peers, so that is an error naming the GPUs. GPUs without fabric
info, or with the all-zero cluster UUID NVML reports for an unregistered GPU, do not count (as the reference
driver skips them). No GPU in a clique gives ``""``: this node has no multi-node NVLink and runs no IMEX.
"""

from __future__ import annotations

from collections import defaultdict

from libs.devices.model import Inventory

ZERO_UUID = "00000000-0000-0000-0000-000000000000"


class CliqueError(Exception):
    """The node's GPUs disagree on their clique; the message names each clique and its GPUs."""


def node_clique(inventory: Inventory) -> str:
    """The clique all of the node's fabric-attached GPUs share, or ``""`` when none is attached."""
    members: dict[str, list[str]] = defaultdict(list)
    for gpu in inventory.gpus:
        if gpu.fabric is not None and gpu.fabric.cluster_uuid not in ("", ZERO_UUID):
            members[gpu.fabric.clique].append(gpu.name)
    if len(members) > 1:
        groups = "; ".join(f"{', '.join(gpus)} in {clique}" for clique, gpus in sorted(members.items()))
        raise CliqueError(
            f"node {inventory.node}: GPUs report different NVLink cliques ({groups}); "
            "check the fabric manager's registration of these GPUs"
        )
    return next(iter(members), "")


def channel_refusal(clique: str, *, node: str, domain: str) -> str | None:
    """Why a channel claim cannot be prepared on a node of ``clique``, or None when it can.

    A node outside any clique has no IMEX, so an IMEX channel there would give the workload nothing to share
    memory through; refusing names the node so the user can steer the claim elsewhere.
    """
    if clique:
        return None
    return (
        f"node {node} has no multi-node NVLink (no GPU reports an NVLink clique), so it cannot "
        f"join ComputeDomain {domain}; schedule the workload on nodes whose GPUs are in an NVLink clique"
    )
