"""This node's pool of the compute-domain driver: ``slot-0`` … ``slot-<N-1>``, the channel claims it takes.

A slot is what the scheduler allocates (the DeviceClass ``compute-domain-default-channel.gpudra.io`` selects
``type == "channel"``); which IMEX channel a claim's pod gets is the node's choice at prepare
(``channels.choose_channel``). NVIDIA's driver publishes one channel device per node, so a node takes one
channel claim at all; slots let several pods of a domain, or several domains, share a node. A node without
NVLink fabric publishes no slots: no channel claim can be scheduled where it could not be prepared.
"""

from __future__ import annotations

from typing import Any

from libs.slices.build import API_VERSION, slice_name
from services.compute_domain.node.channels import SLOT_PREFIX


def slots_slice(node: str, driver: str, slots: int, clique: str) -> list[dict[str, Any]]:
    """The desired pool (empty: unpublish) in the shape ``libs.kube.SlicePublisher`` takes."""
    if not clique or slots == 0:
        return []
    devices = [
        {
            "name": f"{SLOT_PREFIX}{index}",
            "attributes": {"type": {"string": "channel"}, "slot": {"int": index}, "cliqueID": {"string": clique}},
        }
        for index in range(slots)
    ]
    return [
        {
            "apiVersion": API_VERSION,
            "kind": "ResourceSlice",
            "metadata": {"name": slice_name(node, 0, driver)},
            "spec": {
                "driver": driver,
                "nodeName": node,
                "pool": {"name": node, "generation": 1, "resourceSliceCount": 1},
                "devices": devices,
            },
        }
    ]
