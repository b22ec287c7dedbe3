"""Crash safety and replicas: a controller killed with SIGKILL in the middle of a remediation is followed by
one that resumes from KV where the first left off, doing nothing twice; two replicas share the work."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from functools import partial
from pathlib import Path
from typing import TypeVar

import pytest

from libs.bus import Bus
from libs.events.catalogue.remediation import RemediationStateChanged, RemediationStepCompleted
from libs.natsserver import EmbeddedNats
from tests.health_controller.health_controller_support import (
    ChildController,
    Feed,
    LightNode,
    add_node,
    add_pod,
    controller_process,
    controller_settings,
    health_event,
    light_node,
    pods_on,
    until,
)
from tests.support.kubeapi import KubeApiServer

pytestmark = pytest.mark.slow
T = TypeVar("T")


def state_label(kube_api: KubeApiServer) -> str | None:
    node = kube_api.store.get("nodes", "node-a") or {}
    labels: dict[str, str] = node.get("metadata", {}).get("labels") or {}
    return labels.get("gpu.gpudra.io/remediation-state")


def device_healthy(event: RemediationStateChanged) -> bool:
    return event.scope == "device" and event.state == "healthy"


@asynccontextmanager
async def nodes(
    nats: EmbeddedNats, kube_api: KubeApiServer, tmp_path: Path, *names: str
) -> AsyncIterator[list[LightNode]]:
    async with AsyncExitStack() as stack:
        found = []
        for name in names:
            add_node(kube_api, name)
            found.append(await stack.enter_async_context(light_node(nats.url, tmp_path, name)))
        yield found


async def test_a_controller_killed_during_a_gpu_reset_is_followed_by_one_that_verifies_instead_of_resetting_again(
    nats_server: EmbeddedNats, bus: Bus, kube_api: KubeApiServer, tmp_path: Path
) -> None:
    settings = controller_settings(nats_server.url, kube_api)
    async with nodes(nats_server, kube_api, tmp_path, "node-a") as (node,):
        node.gate = asyncio.Event()  # the reset happens, its answer never comes
        first = ChildController(settings)
        await first.start()
        await bus.publish(health_event("node-a", node.gpu(1)))
        await node.changed.until(lambda: node.resets)
        await first.kill()
        feed = await Feed.subscribe(bus)
        async with controller_process(settings):
            await feed.expect(RemediationStateChanged, device_healthy)
        node.gate.set()
    assert node.resets == ["gpu-1"]
    steps = [(e.step, e.outcome) for e in feed.of(RemediationStepCompleted)]
    assert steps == [("gpu-reset", "skipped"), ("verify", "succeeded")]
    assert "instead of doing it again" in feed.of(RemediationStepCompleted)[0].detail


async def test_a_controller_killed_during_a_blocked_drain_is_followed_by_one_that_finishes_it(
    nats_server: EmbeddedNats, bus: Bus, kube_api: KubeApiServer, tmp_path: Path
) -> None:
    settings = controller_settings(nats_server.url, kube_api)
    feed = await Feed.subscribe(bus)
    async with nodes(nats_server, kube_api, tmp_path, "node-a") as (node,):
        add_pod(kube_api, "node-a", "train-1", device="gpu-1")
        kube_api.store.block_eviction("default", "train-1")
        first = ChildController(settings)
        await first.start()
        await bus.publish(health_event("node-a", node.gpu(1)))
        await feed.expect(RemediationStateChanged, lambda e: e.state == "draining")
        await until(lambda: state_label(kube_api) == "draining", kube_api)
        await first.kill()
        before = set(feed.ids_of(RemediationStateChanged))
        kube_api.store.clear_failures()
        async with controller_process(settings):
            await feed.expect(RemediationStateChanged, device_healthy)
    assert node.resets == ["gpu-1"]
    assert pods_on(kube_api, "node-a") == []
    new = [
        e.state
        for i, e in zip(feed.ids, feed.seen, strict=True)
        if isinstance(e, RemediationStateChanged) and i not in before
    ]
    assert new == ["remediating", "verifying", "healthy"]  # any event published again carried its first id


def quarantined(node: str) -> Callable[[RemediationStateChanged], bool]:
    return lambda event: event.node == node and event.state == "quarantined"


async def test_two_replicas_share_the_work_and_do_each_thing_once(
    nats_server: EmbeddedNats, bus: Bus, kube_api: KubeApiServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = ("node-a", "node-b", "node-c", "node-d", "node-e", "node-f")
    feed = await Feed.subscribe(bus)
    taken: dict[str, list[str]] = {"ctl-1": [], "ctl-2": []}
    async with (
        nodes(nats_server, kube_api, tmp_path, *names) as lights,
        controller_process(controller_settings(nats_server.url, kube_api, controller_id="ctl-1")) as one,
        controller_process(controller_settings(nats_server.url, kube_api, controller_id="ctl-2")) as two,
    ):
        assert one.election.is_leader != two.election.is_leader
        for replica, controller in (("ctl-1", one), ("ctl-2", two)):
            monkeypatch.setattr(controller.lanes, "submit", _noting(controller.lanes.submit, taken[replica]))
        for light in lights:  # one at a time: both replicas wait for the next event, and take turns
            await light.report(health_event(light.name, light.gpu(2)))
            await feed.changed.until(partial(feed.ids_of, RemediationStateChanged, quarantined(light.name)))
        await feed.changed.until(lambda: len(feed.ids_of(RemediationStateChanged, device_healthy)) == len(names))
    assert all(taken.values()), f"one replica did all the work: {taken}"
    assert [light.resets for light in lights] == [["gpu-2"]] * len(names)
    per_node = {name: [e.state for e in feed.of(RemediationStateChanged) if e.node == name] for name in names}
    assert set(map(tuple, per_node.values())) == {("quarantined", "draining", "remediating", "verifying", "healthy")}


def _noting(submit: Callable[[str, T], None], nodes: list[str]) -> Callable[[str, T], None]:
    """The lanes' submit, noting which nodes' work this replica took."""

    def noted(node: str, item: T) -> None:
        nodes.append(node)
        submit(node, item)

    return noted
