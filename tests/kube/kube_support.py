"""Objects and backends for the Kubernetes port tests: one contract, two adapters.

A ``Backend`` is a ``KubeApi`` plus what a test needs to look behind it: how many writes reached the store. The
cluster backend is ``ClusterKube`` on the API test server (which validates every object against Kubernetes
1.34); the local backend is ``LocalKube`` on a real nats-server.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from kubernetes_asyncio.client import ApiClient

from libs.bus import Bus
from libs.bus.topology import KUBE_BUCKET
from libs.kube import ClusterKube, KubeApi, LocalKube, custom_resource
from libs.kube.backoff import Backoff
from libs.slices import DRIVER_NAME, slice_name
from tests.support.kubeapi import KubeApiServer

Obj = dict[str, Any]

COMPUTE_DOMAINS = custom_resource("resource.nvidia.com", "v1beta1", "computedomains", "ComputeDomain")
COMPUTE_DOMAIN_CRD: Obj = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "computedomains.resource.nvidia.com"},
    "spec": {
        "group": "resource.nvidia.com",
        "scope": "Namespaced",
        "names": {"plural": "computedomains", "singular": "computedomain", "kind": "ComputeDomain"},
        "versions": [
            {
                "name": "v1beta1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "required": ["numNodes"],
                                "properties": {"numNodes": {"type": "integer", "minimum": 0}},
                            },
                            "status": {
                                "type": "object",
                                "properties": {"status": {"type": "string", "enum": ["Ready", "NotReady"]}},
                            },
                        },
                    }
                },
            }
        ],
    },
}


@dataclass
class Backend:
    name: str
    kube: KubeApi
    writes: Callable[[], Awaitable[int]]  # writes to the store so far (API write requests / KV messages)
    kube_api: KubeApiServer | None = None


async def cluster_backend(kube_api: KubeApiServer, **options: Any) -> Backend:
    """``ClusterKube`` on the test server, with the ComputeDomain CRD installed."""
    kube_api.store.create(COMPUTE_DOMAIN_CRD)
    options.setdefault("backoff", Backoff(base=0.01, cap=0.05))
    kube = ClusterKube(ApiClient(configuration=kube_api.configuration()), **options)

    async def writes() -> int:
        return kube_api.store.writes()

    return Backend("cluster", kube, writes, kube_api)


async def local_backend(bus: Bus) -> Backend:
    kube = await LocalKube.open(bus.js)

    async def writes() -> int:
        return int((await bus.js.stream_info(f"KV_{KUBE_BUCKET}")).state.last_seq)

    return Backend("local", kube, writes)


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll a condition nothing announces (a request count on the test server), for at most ``timeout``."""
    for _ in range(int(timeout / 0.02)):
        if predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the condition did not become true in time")


# --- objects ------------------------------------------------------------------------------------------------


def node(name: str, **labels: str) -> Obj:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels}}


def pod(name: str, node_name: str, namespace: str = "default", **labels: str) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"nodeName": node_name, "containers": [{"name": "main", "image": "busybox"}]},
    }


def claim(name: str, namespace: str = "default") -> Obj:
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"devices": {"requests": [{"name": "gpu", "exactly": {"deviceClassName": DRIVER_NAME}}]}},
    }


def allocation(node_name: str, device: str) -> Obj:
    """A claim status as the scheduler writes it."""
    result = {"request": "gpu", "driver": DRIVER_NAME, "pool": node_name, "device": device}
    return {"allocation": {"devices": {"results": [result]}}}


def device_class(name: str = DRIVER_NAME) -> Obj:
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "DeviceClass",
        "metadata": {"name": name},
        "spec": {"selectors": [{"cel": {"expression": f"device.driver == '{DRIVER_NAME}'"}}]},
    }


def lease(name: str, holder: str, namespace: str = "gpudra") -> Obj:
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15},
    }


def compute_domain(name: str, nodes: int = 2, namespace: str = "default") -> Obj:
    return {
        "apiVersion": "resource.nvidia.com/v1beta1",
        "kind": "ComputeDomain",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"numNodes": nodes},
    }


def gpu(index: int, *, memory: str = "80Gi", product: str = "NVIDIA H100 80GB HBM3") -> Obj:
    """A full GPU device as the slice builder describes one."""
    return {
        "name": f"gpu-{index}",
        "attributes": {
            "type": {"string": "gpu"},
            "uuid": {"string": f"GPU-00000000-0000-4000-8000-{index:012d}"},
            "minor": {"int": index},
            "productName": {"string": product},
            "architecture": {"string": "Hopper"},
            "cudaComputeCapability": {"version": "9.0.0"},
            "driverVersion": {"version": "570.133.20"},
            "resource.kubernetes.io/pcieRoot": {"string": f"pci0000:{index:02x}"},
        },
        "capacity": {"memory": {"value": memory}, "multiprocessors": {"value": "132"}},
    }


def pool(node_name: str, devices_per_slice: list[list[Obj]], generation: int = 1) -> list[Obj]:
    """A node's desired slices, named like the slice builder names them."""
    return [
        {
            "apiVersion": "resource.k8s.io/v1",
            "kind": "ResourceSlice",
            "metadata": {"name": slice_name(node_name, index)},
            "spec": {
                "driver": DRIVER_NAME,
                "nodeName": node_name,
                "pool": {"name": node_name, "generation": generation, "resourceSliceCount": len(devices_per_slice)},
                "devices": devices,
            },
        }
        for index, devices in enumerate(devices_per_slice)
    ]


def gpus(*indexes: int) -> list[Obj]:
    return [gpu(i) for i in indexes]
