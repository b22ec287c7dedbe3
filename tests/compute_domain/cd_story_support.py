"""Simulated GB200 trays and the compute-domain controller on one real nats-server and the test API server.

Each node runs compute_domain's node side as the service does (its own NATS credentials with the node role,
its own state and CDI directories, the simulated backend) and serves its commands on the bus; channel claims
reach it as the kubelet shim forwards them (``PrepareChannels`` over NATS, with the shim's credentials).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import yaml

from libs.bus import Bus
from libs.cdi import claim_spec_name
from libs.events.catalogue import ClaimPrepareResult, ClaimRef, ClaimUnprepareResult
from libs.events.catalogue.computedomains import (
    PrepareChannels,
    PrepareChannelsReply,
    UnprepareChannels,
    UnprepareChannelsReply,
)
from libs.kube import KubeApi
from libs.kube.cluster import ClusterKube
from libs.settings.loader import env_name
from libs.trust.roles import Role
from libs.version import VERSION
from services.compute_domain.api import API_VERSION, CHANNEL_CLASS, DRIVER
from services.compute_domain.controller.domains import Domains
from services.compute_domain.node.imex_config import domain_files
from services.compute_domain.node.simulated_imex import STATUS_FILE
from services.compute_domain.service import controller_side, node_side
from services.compute_domain.settings import Settings
from tests.support.kubeapi import KubeApiServer
from tests.support.nats_fixture import role_creds

GB200 = "gb200-nvl72"
PROFILE_DIR = Path(__file__).resolve().parents[2] / "libs" / "devices" / "simulated" / "builtin"
WAIT = 15.0


def other_rack_profile(directory: Path) -> str:
    """The GB200 profile with the trays in clique 2 of the same cluster: a second rack."""
    profile = yaml.safe_load((PROFILE_DIR / f"{GB200}.yaml").read_text())
    profile["name"] = "gb200-rack-2"
    profile["fabric"]["clique_id"] = 2
    path = directory / "rack-2.yaml"
    path.write_text(yaml.safe_dump(profile))
    return str(path)


def node_values(url: str, kube_url: str, node: str, home: Path, **overrides: Any) -> dict[str, Any]:
    """A node side's settings fields: its own credentials, state and CDI directories, the simulated backend."""
    return {
        "nats_url": url,
        "node_name": node,
        "nats_creds": role_creds(url, "compute_domain", [Role.COMPUTE_DOMAIN_NODE], node),
        "state_dir": str(home),
        "cdi_dir": str(home / "cdi"),
        "backend": "simulated",
        "profile": GB200,
        "kube_mode": "cluster",
        "kubeconfig": kube_url,
        "role": "node",
        "admission_timeout_seconds": 5.0,
        "channel_ready_timeout_seconds": 10.0,
        **overrides,
    }


def settings_for(url: str, kube_url: str, node: str, home: Path, **overrides: Any) -> Settings:
    return Settings(**node_values(url, kube_url, node, home, **overrides))


def node_env(url: str, kube_url: str, node: str, home: Path, **overrides: Any) -> dict[str, str]:
    """The same settings as the environment of a service process (``python -m services.compute_domain``)."""
    values = node_values(url, kube_url, node, home, log_format="json", **overrides)
    inherited = {name: value for name, value in os.environ.items() if not name.startswith("GPUDRA_")}
    return inherited | {env_name(name): str(value) for name, value in values.items()}


@dataclass
class Node:
    name: str
    settings: Settings
    bus: Bus


@asynccontextmanager
async def running_node(settings: Settings) -> AsyncIterator[Node]:
    """The node side, serving its commands on the bus as the service process does."""
    async with AsyncExitStack() as stack:
        bus = await Bus.connect(settings, "compute_domain")
        stack.push_async_callback(bus.close)
        kube = await ClusterKube.connect(settings.kubeconfig)
        stack.push_async_callback(kube.close)
        endpoints = await stack.enter_async_context(node_side(bus, kube, settings))
        service = await bus.serve(VERSION, endpoints, {})
        stack.push_async_callback(service.stop)
        yield Node(name=settings.node_name, settings=settings, bus=bus)


@asynccontextmanager
async def running_controller(url: str, kube_url: str) -> AsyncIterator[Domains]:
    settings = Settings(
        nats_url=url,
        node_name="controller-0",
        nats_creds=role_creds(url, "compute_domain", [Role.COMPUTE_DOMAIN_CONTROLLER], "controller-0"),
        kube_mode="cluster",
        kubeconfig=kube_url,
        role="controller",
        controller_id="controller-0",
    )
    async with AsyncExitStack() as stack:
        bus = await Bus.connect(settings, "compute_domain")
        stack.push_async_callback(bus.close)
        kube: KubeApi = await ClusterKube.connect(kube_url)
        stack.push_async_callback(kube.close)
        yield await stack.enter_async_context(controller_side(bus, kube, settings))


async def shim_bus(url: str, node: str) -> Bus:
    """A connection with the kubelet shim's credentials for ``node``: what forwards the kubelet's calls."""
    creds = role_creds(url, "kubelet_shim", [Role.KUBELET_SHIM], node)
    return await Bus.connect(Settings(nats_url=url, node_name=node, nats_creds=creds), "kubelet_shim")


async def prepare(bus: Bus, node: str, *claims: ClaimRef) -> dict[str, ClaimPrepareResult]:
    reply = await bus.request(node, PrepareChannels(claims=list(claims)), PrepareChannelsReply, timeout=WAIT)
    return reply.results


async def unprepare(bus: Bus, node: str, *claims: ClaimRef) -> dict[str, ClaimUnprepareResult]:
    reply = await bus.request(node, UnprepareChannels(claims=list(claims)), UnprepareChannelsReply, timeout=WAIT)
    return reply.results


def channel_claim(name: str, namespace: str, *, domain_uid: str, node: str, slot: str) -> dict[str, Any]:
    """A ResourceClaim of the domain's template, allocated by the scheduler to ``slot`` on ``node``."""
    parameters = {"apiVersion": API_VERSION, "kind": "ComputeDomainChannelConfig", "domainID": domain_uid}
    config = {"opaque": {"driver": DRIVER, "parameters": parameters}}
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "devices": {
                "requests": [{"name": "channel", "exactly": {"deviceClassName": CHANNEL_CLASS}}],
                "config": [{"requests": ["channel"], **config}],
            }
        },
        "status": {
            "allocation": {
                "devices": {
                    "results": [{"request": "channel", "driver": DRIVER, "pool": node, "device": slot}],
                    "config": [{"source": "FromClaim", "requests": ["channel"], **config}],
                },
                "nodeSelector": {
                    "nodeSelectorTerms": [
                        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}
                    ]
                },
            }
        },
    }


def create_claim(kube_api: KubeApiServer, obj: dict[str, Any]) -> ClaimRef:
    stored = kube_api.store.create(obj)
    meta = stored["metadata"]
    return ClaimRef(namespace=meta["namespace"], name=meta["name"], uid=meta["uid"])


def create_nodes(kube_api: KubeApiServer, *names: str) -> None:
    for name in names:
        kube_api.store.create({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}})


def create_domain(kube_api: KubeApiServer, name: str, num_nodes: int) -> str:
    """A ComputeDomain in ``default`` (claim template ``<name>-channel``); its UID."""
    channel = {"resourceClaimTemplate": {"name": f"{name}-channel"}}
    obj = {
        "apiVersion": API_VERSION,
        "kind": "ComputeDomain",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"numNodes": num_nodes, "channel": channel},
    }
    return str(kube_api.store.create(obj)["metadata"]["uid"])


def claim_on(
    kube_api: KubeApiServer, name: str, uid: str, node: str, *, slot: str = "slot-0", ns: str = "default"
) -> ClaimRef:
    return create_claim(kube_api, channel_claim(name, ns, domain_uid=uid, node=node, slot=slot))


def spec_file(settings: Settings, claim: ClaimRef) -> Path:
    return Path(settings.cdi_dir) / f"{claim_spec_name(DRIVER, claim.uid)}.json"


def daemon_pid(settings: Settings, uid: str) -> int:
    """The simulated IMEX daemon's pid, from the status it serves."""
    status = domain_files(settings.state_dir, uid).directory / STATUS_FILE
    return int(msgspec.json.decode(status.read_bytes())["pid"])
