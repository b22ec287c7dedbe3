"""The generated permissions, enforced by a real nats-server: who may do what, and who is refused.

Each refusal is checked by the server's own answer (a permissions violation naming the subject), and each
grant by doing the thing. Two nodes, ``node-a`` and ``node-b``; the clients are node-a's unless said.
"""

from __future__ import annotations

import msgspec
import nats
import pytest

from libs.bus import Bus, BusError
from libs.bus.device_health import DeviceHealthFollower
from libs.bus.topology import HEALTH_REMEDIATION, INVENTORY_BUCKET, KUBE_BUCKET, REMEDIATION_BUCKET
from libs.events import Command, rpc_subject
from libs.events.catalogue import ClaimUnprepared, InjectFault, ResetBreaker, ResetGpu
from libs.natsserver import EmbeddedNats
from libs.settings import CommonSettings
from libs.trust.roles import Role
from tests.bus.helpers import unprepared
from tests.trust.trust_support import allowed, holding, publish, refusal, subscribe

A, B = "node-a", "node-b"


def rpc(node: str, command: type[Command]) -> str:
    return rpc_subject(node, command.service, command.endpoint)


async def test_an_anonymous_client_is_refused_at_connect(nats_server: EmbeddedNats) -> None:
    with pytest.raises(BusError, match=r"Authorization Violation.*refused these credentials"):
        await Bus.connect(CommonSettings(nats_url=nats_server.url, node_name=A), "anyone")
    with pytest.raises(nats.errors.Error):
        await nats.connect(nats_server.url, allow_reconnect=False, connect_timeout=2)


async def test_a_node_publishes_its_own_events_and_no_other_nodes(nats_server: EmbeddedNats) -> None:
    async with holding(nats_server.url, "health", [Role.HEALTH_NODE], A) as health:
        await allowed(health, publish(health, "gpudra.v1.node-a.health.events"))
        refused = await refusal(health, publish(health, "gpudra.v1.node-b.health.events"))
        assert 'publish to "gpudra.v1.node-b.health.events"' in refused
        # Not even its own node's facts that only the controller may state (device health, verdicts).
        refused = await refusal(health, publish(health, "gpudra.v1.node-a.health.devices"))
        assert "gpudra.v1.node-a.health.devices" in refused
    async with holding(nats_server.url, "claim_preparation", [Role.CLAIM_PREPARATION], A) as claims:
        await allowed(claims, claims.publish(unprepared("u1", node=A)))
        assert "node-b.claims.unprepared" in await refusal(
            claims, publish(claims, "gpudra.v1.node-b.claims.unprepared")
        )


async def test_claim_preparation_follows_device_health_but_may_not_state_it(nats_server: EmbeddedNats) -> None:
    """Its claims' device status reports what the controller says of each device; saying it is the controller's."""
    async with holding(nats_server.url, "claim_preparation", [Role.CLAIM_PREPARATION], A) as claims:
        follower = DeviceHealthFollower(claims, A, lambda event, at: None)
        await allowed(claims, follower.start())
        await follower.stop()
        refused = await refusal(claims, publish(claims, "gpudra.v1.node-a.health.devices"))
        assert "gpudra.v1.node-a.health.devices" in refused


async def test_a_node_cannot_call_another_nodes_endpoints(nats_server: EmbeddedNats) -> None:
    async with holding(nats_server.url, "kubelet_shim", [Role.KUBELET_SHIM], A) as shim:
        refused = await refusal(shim, publish(shim, "gpudra.v1.node-b.rpc.claims.prepare"))
        assert 'publish to "gpudra.v1.node-b.rpc.claims.prepare"' in refused
        # Its own node's GPU reset is not the shim's to call either.
        refused = await refusal(shim, publish(shim, "gpudra.v1.node-a.rpc.health.reset-gpu"))
        assert "gpudra.v1.node-a.rpc.health.reset-gpu" in refused
    async with holding(nats_server.url, "health", [Role.HEALTH_NODE], A) as health:
        refused = await refusal(health, publish(health, "gpudra.v1.node-b.rpc.health.reset-gpu"))
        assert "gpudra.v1.node-b.rpc.health.reset-gpu" in refused
        # Nor serve them: a subscription to node-b's endpoint would let it answer in node-b's name.
        refused = await refusal(health, subscribe(health, "gpudra.v1.node-b.rpc.health.reset-gpu"))
        assert 'subscription to "gpudra.v1.node-b.rpc.health.reset-gpu"' in refused


@pytest.mark.parametrize(
    "api",
    [
        "$JS.API.STREAM.CREATE.GPUDRA_EVIL",
        "$JS.API.STREAM.DELETE.GPUDRA_HEALTH",
        "$JS.API.STREAM.UPDATE.GPUDRA_HEALTH",
        "$JS.API.STREAM.PURGE.GPUDRA_HEALTH",
        "$JS.API.CONSUMER.DELETE.GPUDRA_HEALTH.health-remediation",
        "$JS.API.STREAM.CREATE.KV_gpudra_evil",
    ],
)
async def test_no_node_service_administers_jetstream(nats_server: EmbeddedNats, api: str) -> None:
    for service, roles in (
        ("discovery", [Role.DISCOVERY]),
        ("kubelet_shim", [Role.KUBELET_SHIM]),
        ("claim_preparation", [Role.CLAIM_PREPARATION]),
    ):
        async with holding(nats_server.url, service, roles, A) as client:
            assert api.lower() in await refusal(client, publish(client, api, b"{}"))


async def test_a_node_writes_only_its_own_kv_keys(nats_server: EmbeddedNats) -> None:
    async with holding(nats_server.url, "discovery", [Role.DISCOVERY], A) as discovery:
        kv = await discovery.kv(INVENTORY_BUCKET)
        await allowed(discovery, kv.put("node-a", b"{}"))
        refused = await refusal(discovery, publish(discovery, f"$KV.{INVENTORY_BUCKET}.node-b"))
        assert f"$kv.{INVENTORY_BUCKET}.node-b" in refused
        refused = await refusal(discovery, publish(discovery, "$KV.gpudra_health.node-a.taints"))
        assert "$kv.gpudra_health.node-a.taints" in refused  # its taints are the controller's to write


async def test_clients_read_only_their_own_replies(nats_server: EmbeddedNats) -> None:
    async with holding(nats_server.url, "discovery", [Role.DISCOVERY], A) as discovery:
        for inbox in ("_INBOX.>", "_INBOX.health.node-a.>", "_INBOX.discovery.node-b.>"):
            assert f'subscription to "{inbox.lower()}"' in await refusal(discovery, subscribe(discovery, inbox))


async def test_only_the_controller_takes_from_its_durable(nats_server: EmbeddedNats, bus: Bus) -> None:
    stream, durable = HEALTH_REMEDIATION.stream, HEALTH_REMEDIATION.name
    next_msg = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}"
    async with holding(nats_server.url, "operator", [Role.OPERATOR], A) as operator:
        assert next_msg.lower() in await refusal(operator, publish(operator, next_msg, b'{"batch":1}'))
    async with holding(nats_server.url, "extender", [Role.EXTENDER], A) as extender:
        assert next_msg.lower() in await refusal(extender, publish(extender, next_msg, b'{"batch":1}'))
        ack = f"$JS.ACK.{stream}.{durable}.1.1.1.0.0"
        assert ack.lower() in await refusal(extender, publish(extender, ack, b"+TERM"))


async def test_the_extender_reads_events_and_does_nothing_else(nats_server: EmbeddedNats, bus: Bus) -> None:
    async with holding(nats_server.url, "extender", [Role.EXTENDER], A) as extender:
        subscription = await extender.js.pull_subscribe("gpudra.v1.*.claims.>", durable="my-extension")
        await bus.publish(unprepared("seen"))
        [msg] = await subscription.fetch(1, timeout=5)
        await allowed(extender, msg.ack())
        assert (msg.headers or {})["ce-type"] == ClaimUnprepared.ce_type()
        assert "gpudra.v1.node-a.claims.unprepared" in await refusal(
            extender, publish(extender, "gpudra.v1.node-a.claims.unprepared")
        )
        assert "rpc.devices.inject-fault" in await refusal(extender, publish(extender, rpc(A, InjectFault)))
        kv_read = f"$JS.API.STREAM.MSG.GET.KV_{INVENTORY_BUCKET}"
        assert kv_read.lower() in await refusal(extender, publish(extender, kv_read))
        assert "gpudra.v1.node-a.rpc.>" in await refusal(extender, subscribe(extender, "gpudra.v1.node-a.rpc.>"))


async def test_the_operator_does_what_the_cli_does(nats_server: EmbeddedNats, bus: Bus) -> None:
    await (await bus.kv(INVENTORY_BUCKET)).put("node-a", b'{"node": "node-a"}')
    async with holding(nats_server.url, "operator", [Role.OPERATOR], A) as operator:
        await allowed(operator, subscribe(operator, "gpudra.v1.>"))  # gpudra events tail
        await allowed(operator, subscribe(operator, "gpudra.deadletter.>"))
        entry = await (await operator.kv(INVENTORY_BUCKET)).get("node-a")  # gpudra devices
        assert msgspec.json.decode(entry.value or b"") == {"node": "node-a"}
        await allowed(operator, operator.kv(REMEDIATION_BUCKET))  # gpudra health status
        await allowed(operator, (await operator.kv(KUBE_BUCKET)).put("claims.x", b"{}"))  # gpudra claim create
        await allowed(operator, publish(operator, rpc(B, InjectFault)))  # gpudra faults
        await allowed(operator, publish(operator, rpc("_cluster", ResetBreaker)))
        # But it states no facts and resets no GPU itself: those are the services'.
        refused = await refusal(operator, publish(operator, "gpudra.v1.node-a.health.events"))
        assert "gpudra.v1.node-a.health.events" in refused
        assert "rpc.health.reset-gpu" in await refusal(operator, publish(operator, rpc(A, ResetGpu)))


async def test_the_controller_acts_across_nodes(nats_server: EmbeddedNats) -> None:
    async with holding(nats_server.url, "health", [Role.HEALTH_CONTROLLER], "controller-0") as controller:
        await allowed(controller, publish(controller, "gpudra.v1.node-b.health.devices"))
        await allowed(controller, publish(controller, "gpudra.v1.node-b.rpc.health.reset-gpu"))
        await allowed(controller, (await controller.kv("gpudra_health")).put("node-b.taints", b"{}"))
        # It reacts to health events; it does not make them up.
        refused = await refusal(controller, publish(controller, "gpudra.v1.node-b.health.events"))
        assert "gpudra.v1.node-b.health.events" in refused
