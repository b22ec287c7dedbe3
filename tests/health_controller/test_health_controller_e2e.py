"""The whole cycle on real parts: a real nats-server, the Kubernetes API test server, simulated nodes with
discovery (publishing ResourceSlices), the node agent (monitors and GPU reset) and the kubelet's health view,
and the remediation controller, each on its own connection as in separate processes."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from libs.bus import Bus
from libs.events.catalogue import InjectFault, InjectFaultReply
from libs.events.catalogue.remediation import RemediationStateChanged, RemediationStepCompleted
from libs.natsserver import EmbeddedNats
from tests.health_controller.health_controller_support import (
    Feed,
    add_node,
    add_pod,
    controller_process,
    controller_settings,
    cordoned,
    kube_node,
    node_taints,
    pods_on,
    sim_node,
    slice_taints,
    until,
)
from tests.support.kubeapi import KubeApiServer

pytestmark = pytest.mark.slow

XID_TAINT = {"key": "gpu.gpudra.io/xid", "value": "48", "effect": "NoSchedule"}
STATE_LABEL = "gpu.gpudra.io/remediation-state"


async def inject(bus: Bus, node: str, xid: int, device: str = "gpu-1") -> None:
    await bus.request(node, InjectFault(device=device, kind="xid", xid=xid), InjectFaultReply)


async def test_xid_48_taints_the_gpu_evicts_its_pods_resets_and_returns_it_to_service(
    nats_server: EmbeddedNats, bus: Bus, kube_api: KubeApiServer, tmp_path: Path
) -> None:
    for name in ("node-a", "node-b"):
        add_node(kube_api, name)
    add_pod(kube_api, "node-a", "train-1", device="gpu-1")
    add_pod(kube_api, "node-a", "train-2", device="gpu-2")
    add_pod(kube_api, "node-a", "mig-user", device="gpu-1-mig-1g10gb-19-0")
    feed = await Feed.subscribe(bus)
    settings = controller_settings(nats_server.url, kube_api)
    async with (
        sim_node(nats_server, kube_api, tmp_path, "node-a") as node,
        sim_node(nats_server, kube_api, tmp_path, "node-b"),
        controller_process(settings),
    ):
        injected = dt.datetime.now(dt.UTC).replace(microsecond=0)
        await inject(bus, "node-a", 48)
        published: list[dict[str, Any]] = []

        def tainted() -> bool:
            published[:] = slice_taints(kube_api, "node-a", "gpu-1")
            return [{k: v for k, v in t.items() if k != "timeAdded"} for t in published] == [XID_TAINT]

        assert await until(tainted, kube_api)
        # timeAdded is when the condition began: what a claim's tolerationSeconds count from.
        assert injected <= dt.datetime.fromisoformat(published[0]["timeAdded"]) <= dt.datetime.now(dt.UTC)
        healthy = await feed.expect(RemediationStateChanged, lambda e: e.state == "healthy" and e.scope == "device")
        assert healthy.previous == "verifying"
        assert await until(lambda: slice_taints(kube_api, "node-a", "gpu-1") == [], kube_api)
        await node.changed.until(lambda: node.seen.get("gpu-1") == ["Healthy", "Unhealthy", "Healthy"])

    assert pods_on(kube_api, "node-a") == ["default/train-2"]  # only the pods on gpu-1 (and its MIG devices) went
    steps = [(e.step, e.outcome) for e in feed.of(RemediationStepCompleted)]
    assert steps == [("drain", "succeeded"), ("gpu-reset", "succeeded"), ("verify", "succeeded")]
    states = [e.state for e in feed.of(RemediationStateChanged)]
    assert states == ["quarantined", "draining", "remediating", "verifying", "healthy"]
    assert not cordoned(kube_api, "node-a")
    assert STATE_LABEL not in kube_node(kube_api, "node-a")["metadata"].get("labels", {})
    assert all(slice_taints(kube_api, "node-b", f"gpu-{n}") == [] for n in range(8))


async def test_xid_79_cordons_taints_drains_reboots_and_puts_the_node_back(
    nats_server: EmbeddedNats, bus: Bus, kube_api: KubeApiServer, tmp_path: Path
) -> None:
    add_node(kube_api, "node-a")
    add_pod(kube_api, "node-a", "train-1", device="gpu-1")
    add_pod(kube_api, "node-a", "web")
    add_pod(kube_api, "node-a", "kube-proxy", namespace="kube-system")
    feed = await Feed.subscribe(bus)
    async with (
        sim_node(nats_server, kube_api, tmp_path, "node-a"),
        controller_process(controller_settings(nats_server.url, kube_api, reboot_hook="simulated")),
    ):
        await inject(bus, "node-a", 79)
        assert await until(lambda: cordoned(kube_api, "node-a"), kube_api)
        assert node_taints(kube_api, "node-a") == ["gpu.gpudra.io/gpu-error=fatal:NoSchedule"]
        assert kube_node(kube_api, "node-a")["metadata"]["labels"][STATE_LABEL] in ("quarantined", "draining")
        await feed.expect(RemediationStateChanged, lambda e: e.scope == "node" and e.state == "healthy")
        assert await until(lambda: not cordoned(kube_api, "node-a"), kube_api)

    assert node_taints(kube_api, "node-a") == []
    assert pods_on(kube_api, "node-a") == ["kube-system/kube-proxy"]  # the drain leaves system pods alone
    steps = [(e.step, e.outcome) for e in feed.of(RemediationStepCompleted)]
    assert steps == [("drain", "succeeded"), ("reboot", "succeeded"), ("verify", "succeeded")]
    assert STATE_LABEL not in kube_node(kube_api, "node-a")["metadata"].get("labels", {})
