"""A node that tries to speak for another: every way it can put a health event about node-b on the bus is
refused, by the server or by the controller (visibly, in the dead letters), and node-b is left alone. A real
fault of node-b afterwards is acted upon, so "nothing happened" is not the system being asleep."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import nats.errors
from nats.js import api

from libs.bus import Bus
from libs.bus.topology import DEADLETTER_STREAM, INVENTORY_BUCKET
from libs.events import encode
from libs.events.catalogue.health import FaultClassified
from libs.natsserver import EmbeddedNats
from libs.trust.roles import Role
from tests.health_controller.health_controller_support import (
    Feed,
    LightNode,
    add_node,
    controller_process,
    controller_settings,
    cordoned,
    health_event,
    light_node,
)
from tests.support.kubeapi import KubeApiServer
from tests.trust.trust_support import holding, publish, refusal

NODE_B_EVENTS = "gpudra.v1.node-b.health.events"
NODE_A_EVENTS = "gpudra.v1.node-a.health.events"


@asynccontextmanager
async def two_nodes(
    nats: EmbeddedNats, bus: Bus, kube_api: KubeApiServer, tmp_path: Path
) -> AsyncIterator[tuple[LightNode, Feed]]:
    for name in ("node-a", "node-b"):
        add_node(kube_api, name)
    feed = await Feed.subscribe(bus)
    async with (
        light_node(nats.url, tmp_path, "node-a"),
        light_node(nats.url, tmp_path, "node-b") as node_b,
        controller_process(controller_settings(nats.url, kube_api)),
    ):
        yield node_b, feed


async def dead_letter_reasons(bus: Bus, count: int) -> list[str]:
    subscription = await bus.js.subscribe(
        "gpudra.deadletter.>", stream=DEADLETTER_STREAM, ordered_consumer=True, deliver_policy=api.DeliverPolicy.ALL
    )
    try:
        return [
            ((await subscription.next_msg(timeout=10)).headers or {}).get("gpudra-dlq-reason", "") for _ in range(count)
        ]
    finally:
        await subscription.unsubscribe()


async def test_a_node_cannot_make_the_controller_act_on_another_node(
    nats_server: EmbeddedNats, bus: Bus, kube_api: KubeApiServer, tmp_path: Path
) -> None:
    async with two_nodes(nats_server, bus, kube_api, tmp_path) as (node_b, feed):
        forged = health_event("node-b", node_b.gpu(1), "xid", "48")
        async with holding(nats_server.url, "health", [Role.HEALTH_NODE], "node-a") as attacker:
            # 1. On node-b's subject: the server refuses it.
            headers, body = encode(forged, source="/gpudra/node-b/health")
            refused = await refusal(attacker, publish(attacker, NODE_B_EVENTS, body))
            assert f'publish to "{NODE_B_EVENTS}"' in refused
            # 2. On its own subject, about node-b: the controller refuses it.
            await attacker.js.publish(NODE_A_EVENTS, body, headers=headers)
            # 3. Its own node in the data, node-b's service as ce-source: refused too.
            headers, body = encode(health_event("node-a", node_b.gpu(1)), source="/gpudra/node-b/health")
            await attacker.js.publish(NODE_A_EVENTS, body, headers=headers)
        async with holding(nats_server.url, "discovery", [Role.DISCOVERY], "node-a") as relay:
            # 4. A JetStream API answer sent to node-b's subject (responses go wherever the requester says):
            #    stored, since the server publishes it, but it is not a CloudEvent.
            request = b'{"last_by_subj": "$KV.gpudra_inventory.node-a"}'
            await relay.nc.publish(f"$JS.API.STREAM.MSG.GET.KV_{INVENTORY_BUCKET}", request, reply=NODE_B_EVENTS)
            await relay.nc.flush()
            # 5. A direct get, which would return a stored message verbatim: no role may make one.
            direct = f"$JS.API.DIRECT.GET.KV_{INVENTORY_BUCKET}.$KV.{INVENTORY_BUCKET}.node-a"
            assert direct.lower() in await refusal(relay, relay.nc.request(direct, b"", timeout=0.5))
        reasons = await dead_letter_reasons(bus, 3)
        assert feed.of(FaultClassified) == []
        assert node_b.resets == []
        assert not cordoned(kube_api, "node-b")

        await node_b.report(forged)  # node-b's own monitors: acted upon
        verdict = await feed.expect(FaultClassified)
    assert (verdict.node, verdict.disposition) == ("node-b", "acted")
    seen = "\n".join(reasons)  # two nodes' lanes: in any order
    assert "event of node 'node-b' published on node node-a's subject" in seen
    assert "ce-source '/gpudra/node-b/health' is not a service of node node-a" in seen
    assert "missing header(s)" in seen


async def test_no_bucket_allows_direct_gets(bus: Bus) -> None:
    """What makes the direct-get relay impossible even for a role that could ask for one."""
    for name in (f"KV_{INVENTORY_BUCKET}", "KV_gpudra_health", "KV_gpudra_remediation", "KV_gpudra_leases"):
        assert not (await bus.js.stream_info(name)).config.allow_direct, name
    try:
        await bus.nc.request(f"$JS.API.DIRECT.GET.KV_{INVENTORY_BUCKET}.$KV.{INVENTORY_BUCKET}.x", b"", timeout=0.5)
    except nats.errors.NoRespondersError:
        return
    raise AssertionError("a direct get was answered")
