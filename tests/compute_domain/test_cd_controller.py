"""The ComputeDomain controller on a real nats-server and the test API server (the shipped CRD installed): it
owns a domain's claim template, follows the nodes' membership events, writes the status the moment it changes,
and finalizes a deleted domain."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from libs.bus import Bus
from libs.events import CLUSTER
from libs.events.catalogue.computedomains import ComputeDomainNodeChanged, ComputeDomainStatusChanged, Readiness
from libs.kube.cluster import ClusterKube
from libs.natsserver import EmbeddedNats
from libs.settings import CommonSettings
from libs.trust.roles import Role
from services.compute_domain.api import FINALIZER
from services.compute_domain.controller.domains import COMPUTE_DOMAINS, Domains
from tests.compute_domain.test_cd_api import CLIQUE, domain
from tests.support.kubeapi import KubeApiServer
from tests.support.nats_fixture import role_creds
from tests.support.watching import events_of

WAIT = 10.0
KILLED = "IMEX daemon (pid 42) was killed by SIGKILL"


@asynccontextmanager
async def controller_parts(url: str, kube_api: KubeApiServer) -> AsyncIterator[tuple[Bus, ClusterKube]]:
    """The controller's connection (its own role) and its API client."""
    creds = role_creds(url, "compute_domain", [Role.COMPUTE_DOMAIN_CONTROLLER], "controller-0")
    bus = await Bus.connect(CommonSettings(nats_url=url, node_name="controller-0", nats_creds=creds), "compute_domain")
    kube = await ClusterKube.connect(kube_api.url)
    try:
        yield bus, kube
    finally:
        await kube.close()
        await bus.close()


@asynccontextmanager
async def leading(bus: Bus, kube: ClusterKube) -> AsyncIterator[Domains]:
    """One controller's life: started, leading, stopped (a restart is another one on the same connection)."""
    domains = Domains(bus, kube)
    await domains.start()
    try:
        await domains.lead(True)
        yield domains
    finally:
        await domains.stop()


def stored(kube_api: KubeApiServer, name: str = "train") -> dict[str, Any]:
    return kube_api.store.get("computedomains", name, "default") or {}


def ready_reason(obj: dict[str, Any]) -> tuple[str, str, str]:
    status = obj.get("status") or {}
    condition: dict[str, str] = next((c for c in status.get("conditions", []) if c["type"] == "Ready"), {})
    return status.get("status", ""), condition.get("reason", ""), condition.get("message", "")


async def joined(bus: Bus, uid: str, node: str, index: int, *, ready: bool = True, reason: str = "") -> None:
    status: Readiness = "Ready" if ready else "NotReady"
    event = ComputeDomainNodeChanged(
        node=node, domain_uid=uid, clique_id=CLIQUE, index=index, status=status, ip_address=f"10.0.0.{index + 1}",
        reason=reason,
    )  # fmt: skip
    await bus.publish(event)


async def test_a_domain_waits_for_its_nodes_is_ready_loses_a_daemon_and_is_finalized(
    nats_server: EmbeddedNats, bus: Bus, installed: KubeApiServer
) -> None:
    kube_api = installed
    announced = await events_of(bus, ComputeDomainStatusChanged, CLUSTER)
    async with controller_parts(nats_server.url, kube_api) as (own_bus, kube), leading(own_bus, kube):
        kube_api.store.create({**domain(numNodes=2), "metadata": {"name": "train", "namespace": "default"}})
        waiting = await kube_api.store.wait_for(lambda: stored(kube_api).get("status") and stored(kube_api), WAIT)
        uid = waiting["metadata"]["uid"]
        assert FINALIZER in waiting["metadata"]["finalizers"]
        assert ready_reason(waiting) == ("NotReady", "WaitingForNodes", "0 of 2 nodes joined")
        template = kube_api.store.get("resourceclaimtemplates", "train-channel", "default")
        assert template is not None
        assert template["metadata"]["labels"]["resource.gpudra.io/computeDomain"] == uid
        assert (await asyncio.wait_for(announced.get(), WAIT)).status == "NotReady"

        await joined(bus, uid, "gb-0", 0)
        await joined(bus, uid, "gb-1", 1)
        await kube_api.store.wait_for(lambda: ready_reason(stored(kube_api))[0] == "Ready", WAIT)
        assert (await asyncio.wait_for(announced.get(), WAIT)).ready_nodes == 2
        assert [n["name"] for n in stored(kube_api)["status"]["nodes"]] == ["gb-0", "gb-1"]

        await joined(bus, uid, "gb-1", 1, ready=False, reason=KILLED)
        await kube_api.store.wait_for(lambda: ready_reason(stored(kube_api))[0] == "NotReady", WAIT)
        assert ready_reason(stored(kube_api))[1:] == ("NodeNotReady", f"gb-1: {KILLED}")
        lost = await asyncio.wait_for(announced.get(), WAIT)
        assert (lost.status, lost.ready_nodes, lost.reason) == ("NotReady", 1, f"gb-1: {KILLED}")

        await kube.delete(COMPUTE_DOMAINS, "train", "default")  # the finalizer holds it until let go
        await kube_api.store.wait_for(lambda: not stored(kube_api), WAIT)
    assert kube_api.store.get("resourceclaimtemplates", "train-channel", "default") is None
