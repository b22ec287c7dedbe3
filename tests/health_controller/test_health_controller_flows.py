"""The controller's paths through the cluster, on a real nats-server and the Kubernetes API test server, with
light simulated nodes (an inventory and a ResetGpu responder each) and a recording reboot hook."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from nats.js.errors import KeyNotFoundError

from libs.bus import Bus, CommandError
from libs.events import CLUSTER
from libs.events.catalogue.health import DeviceHealthChanged, FaultClassified
from libs.events.catalogue.remediation import (
    CircuitBreakerChanged,
    RemediationStateChanged,
    RemediationStepCompleted,
    ResetBreaker,
    ResetBreakerReply,
    ResetRemediation,
    ResetRemediationReply,
)
from libs.natsserver import EmbeddedNats
from services.health.controller import Controller
from services.health.controller.cluster_view import NodeState
from tests.health_controller.health_controller_support import (
    Feed,
    LightNode,
    RecordingReboot,
    Signal,
    add_node,
    add_pod,
    controller_process,
    controller_settings,
    cordoned,
    health_event,
    kube_node,
    light_node,
    node_taints,
    taints_entry,
    until,
)
from tests.support.kubeapi import KubeApiServer

STATE_LABEL = "gpu.gpudra.io/remediation-state"
NODE_TAINT = "gpu.gpudra.io/gpu-error=fatal:NoSchedule"


@dataclass
class Cluster:
    controller: Controller
    nodes: dict[str, LightNode]
    reboot: RecordingReboot
    feed: Feed

    async def fault(self, node: str, code: str = "48", minor: int = 1) -> None:
        light = self.nodes[node]
        await light.report(health_event(node, light.gpu(minor), "xid", code))


@asynccontextmanager
async def cluster(
    nats: EmbeddedNats,
    bus: Bus,
    kube_api: KubeApiServer,
    tmp_path: Path,
    names: tuple[str, ...] = ("node-a",),
    *,
    cordoned_nodes: tuple[str, ...] = (),
    **settings: Any,
) -> AsyncIterator[Cluster]:
    async with AsyncExitStack() as stack:
        nodes = {}
        for name in names:
            add_node(kube_api, name, cordoned=name in cordoned_nodes)
            nodes[name] = await stack.enter_async_context(light_node(nats.url, tmp_path, name))
        reboot = RecordingReboot(nodes)
        feed = await Feed.subscribe(bus)
        config = controller_settings(nats.url, kube_api, **settings)
        controller = await stack.enter_async_context(controller_process(config, reboot=reboot))
        yield Cluster(controller=controller, nodes=nodes, reboot=reboot, feed=feed)


def view_changes(controller: Controller) -> Signal:
    """A signal for every Node change the controller's view takes in (its own reaction goes on)."""
    signal, react = Signal(), controller.view.on_node

    def changed(node: str, state: NodeState) -> None:
        if react is not None:
            react(node, state)
        signal.notify()

    controller.view.on_node = changed
    return signal


def state_label(kube_api: KubeApiServer, node: str) -> str | None:
    labels: dict[str, str] = kube_node(kube_api, node)["metadata"].get("labels") or {}
    return labels.get(STATE_LABEL)


def node_state(event: RemediationStateChanged, state: str) -> bool:
    return event.scope == "node" and event.state == state


async def test_a_cordon_made_by_a_person_before_the_fault_stays_after_recovery(
    nats_server: EmbeddedNats, bus: Bus, kube_api: KubeApiServer, tmp_path: Path
) -> None:
    async with cluster(nats_server, bus, kube_api, tmp_path, cordoned_nodes=("node-a",)) as c:
        await c.fault("node-a", "79")
        assert await until(lambda: node_taints(kube_api, "node-a") == [NODE_TAINT], kube_api)
        await c.feed.expect(RemediationStateChanged, lambda e: node_state(e, "healthy"))
        assert await until(lambda: node_taints(kube_api, "node-a") == [], kube_api)
    assert c.reboot.calls == [("node-a", "bare-metal")]
    assert cordoned(kube_api, "node-a")
    assert STATE_LABEL not in kube_node(kube_api, "node-a")["metadata"]["labels"]


async def test_a_manual_uncordon_cancels_the_remediation(
    nats_server: EmbeddedNats, bus: Bus, kube_api: KubeApiServer, tmp_path: Path
) -> None:
    async with cluster(nats_server, bus, kube_api, tmp_path) as c:
        add_pod(kube_api, "node-a", "guarded")
        kube_api.store.block_eviction("default", "guarded")
        await c.fault("node-a", "79")
        await c.feed.expect(RemediationStateChanged, lambda e: node_state(e, "draining"))
        await until(lambda: cordoned(kube_api, "node-a"), kube_api)
        node = kube_node(kube_api, "node-a")
        node["spec"]["unschedulable"] = False
        kube_api.store.update(node)
        released = await c.feed.expect(RemediationStateChanged, lambda e: node_state(e, "healthy"))
        assert released.reason == "uncordoned by hand: remediation cancelled"
        assert await until(lambda: node_taints(kube_api, "node-a") == [], kube_api)
    assert not cordoned(kube_api, "node-a")
    assert c.reboot.calls == []


async def test_evictions_carry_the_grace_period_of_their_drain_rule(
    nats_server: EmbeddedNats, bus: Bus, kube_api: KubeApiServer, tmp_path: Path
) -> None:
    policy = tmp_path / "drain.yaml"
    policy.write_text("rules:\n  - {mode: Immediate, namespaces: [batch], grace: 5s}\n")
    add_pod(kube_api, "node-a", "web")
    add_pod(kube_api, "node-a", "job", namespace="batch")
    async with cluster(nats_server, bus, kube_api, tmp_path, drain_policy_file=str(policy)) as c:
        await c.fault("node-a", "79")
        await c.feed.expect(RemediationStateChanged, lambda e: node_state(e, "healthy"))
    graces = {
        f"{e['metadata']['namespace']}/{e['metadata']['name']}": e["deleteOptions"]["gracePeriodSeconds"]
        for e in kube_api.store.evictions
    }
    assert graces == {"default/web": 60, "batch/job": 5}


async def test_a_reboot_command_whose_node_keeps_its_boot_id_ends_in_remediation_failed(
    nats_server: EmbeddedNats, bus: Bus, kube_api: KubeApiServer, tmp_path: Path
) -> None:
    add_node(kube_api, "node-a", boot_id="boot-1")
    feed = await Feed.subscribe(bus)
    settings = controller_settings(
        nats_server.url, kube_api, reboot_hook="echo reboot {node}", reboot_timeout_seconds=0.2, reset_attempts=1
    )
    async with light_node(nats_server.url, tmp_path, "node-a") as node, controller_process(settings):
        await bus.publish(health_event("node-a", node.gpu(1), "xid", "79"))
        await feed.expect(RemediationStateChanged, lambda e: node_state(e, "remediation-failed"))
    (reboot,) = [e for e in feed.of(RemediationStepCompleted) if e.step == "reboot"]
    assert reboot.outcome == "failed"
    assert reboot.detail == "node node-a did not come back within 0.2s of the reboot request (boot id still boot-1)"


async def test_gpu_resets_that_fail_fall_back_to_a_reboot(
    nats_server: EmbeddedNats, bus: Bus, kube_api: KubeApiServer, tmp_path: Path
) -> None:
    async with cluster(nats_server, bus, kube_api, tmp_path, reset_attempts=2) as c:
        c.nodes["node-a"].fail_resets = True
        await c.fault("node-a", "48")
        await c.feed.expect(RemediationStateChanged, lambda e: node_state(e, "healthy"))
        # The state event and the Node patch that uncordons are done side by side: wait for the patch.
        assert await until(lambda: not cordoned(kube_api, "node-a"), kube_api)
    assert c.nodes["node-a"].resets == ["gpu-1", "gpu-1"]
    assert c.reboot.calls == [("node-a", "bare-metal")]
    device = [e.state for e in c.feed.of(RemediationStateChanged) if e.scope == "device"]
    assert device == ["quarantined", "draining", "remediating", "remediating", "quarantined", "healthy"]
    assert not cordoned(kube_api, "node-a")


async def test_a_repair_that_does_not_hold_waits_for_a_person(
    nats_server: EmbeddedNats, bus: Bus, kube_api: KubeApiServer, tmp_path: Path
) -> None:
    async with cluster(nats_server, bus, kube_api, tmp_path, reset_attempts=2) as c:
        c.reboot.works = False
        await c.fault("node-a", "79")
        failed = await c.feed.expect(RemediationStateChanged, lambda e: node_state(e, "remediation-failed"))
        assert failed.attempt == 2
        assert await until(lambda: state_label(kube_api, "node-a") == "remediation-failed", kube_api)
        assert cordoned(kube_api, "node-a")
        with pytest.raises(CommandError, match="node node-a has no device gpu-99") as refused:
            await bus.request(CLUSTER, ResetRemediation(node="node-a", device="gpu-99"), ResetRemediationReply)
        assert refused.value.code == 404
        reply = await bus.request(
            CLUSTER, ResetRemediation(node="node-a", by="alice", note="board swapped"), ResetRemediationReply
        )
        assert reply.state == "healthy"
        assert await until(lambda: not cordoned(kube_api, "node-a"), kube_api)
    assert len(c.reboot.calls) == 2
    assert node_taints(kube_api, "node-a") == []


async def test_the_breaker_trips_when_too_many_nodes_fail_at_once_and_a_reset_releases_what_it_held(
    nats_server: EmbeddedNats, bus: Bus, kube_api: KubeApiServer, tmp_path: Path
) -> None:
    names = ("node-a", "node-b", "node-c", "node-d")
    async with cluster(nats_server, bus, kube_api, tmp_path, names, breaker_max_share=0.5) as c:
        for name in names[:3]:
            await c.fault(name, "48")
            await c.feed.expect(FaultClassified, on(name))
        tripped = [(e.state, e.quarantined_nodes) for e in c.feed.of(CircuitBreakerChanged)]
        assert tripped == [("open", 2)]  # published before the verdict it caused
        verdicts = {e.node: e.disposition for e in c.feed.of(FaultClassified)}
        assert verdicts == {"node-a": "acted", "node-b": "acted", "node-c": "held"}
        # A verdict is published after its actions: the acted nodes' taints are there, so node-c's absence counts.
        assert (await _has_taints(bus, "node-b"), await _has_taints(bus, "node-c")) == (True, False)
        reply = await bus.request(CLUSTER, ResetBreaker(by="alice"), ResetBreakerReply)
        assert (reply.state, reply.released) == ("closed", 1)
        await c.feed.expect(FaultClassified, lambda e: e.node == "node-c" and e.disposition == "acted")
        await c.feed.expect(DeviceHealthChanged, lambda e: e.node == "node-c" and e.health == "Unhealthy")


def on(node: str) -> Callable[[FaultClassified], bool]:
    return lambda event: event.node == node


async def _has_taints(bus: Bus, node: str) -> bool:
    try:
        await taints_entry(bus, node)
    except KeyNotFoundError:
        return False
    return True


async def test_dry_run_walks_the_whole_path_and_changes_nothing(
    nats_server: EmbeddedNats, bus: Bus, kube_api: KubeApiServer, tmp_path: Path
) -> None:
    async with cluster(nats_server, bus, kube_api, tmp_path, dry_run=True) as c:
        await c.fault("node-a", "79")
        await c.feed.expect(RemediationStateChanged, lambda e: node_state(e, "healthy"))
    changes = c.feed.of(RemediationStateChanged)
    assert [e.state for e in changes if e.scope == "node"] == [
        "quarantined",
        "draining",
        "remediating",
        "verifying",
        "healthy",
    ]
    assert all(e.dry_run for e in changes)
    assert [e.disposition for e in c.feed.of(FaultClassified)] == ["dry-run"]
    assert not await _has_taints(bus, "node-a")
    assert not cordoned(kube_api, "node-a")
    assert kube_api.store.writes("nodes") == 0
    assert c.reboot.calls == []


async def test_a_node_that_opted_out_is_only_recorded(
    nats_server: EmbeddedNats, bus: Bus, kube_api: KubeApiServer, tmp_path: Path
) -> None:
    async with cluster(nats_server, bus, kube_api, tmp_path) as c:
        node = kube_node(kube_api, "node-a")
        node["metadata"]["labels"]["gpu.gpudra.io/remediation"] = "disabled"
        kube_api.store.update(node)
        await view_changes(c.controller).until(lambda: c.controller.view.nodes["node-a"].labels)
        await c.fault("node-a", "79")
        verdict = await c.feed.expect(FaultClassified)
        # A node's events are decided in order, one lane per node: once a second fault's verdict is out,
        # whatever the first one would have done (a cordon, a state change) would have happened.
        await c.fault("node-a", "48")
        await c.feed.expect(FaultClassified, lambda e: e.source_event_ids != verdict.source_event_ids)
    assert verdict.disposition == "recorded"
    assert "opted out" in verdict.reason
    assert not cordoned(kube_api, "node-a")
    assert c.feed.of(RemediationStateChanged) == []
