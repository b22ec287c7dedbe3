"""Bootstrap is idempotent, applies changed limits, and works replicated on a 3-server cluster."""

from __future__ import annotations

import pytest
from nats.js import api

from libs.bus import Bus
from libs.bus.metrics import DEADLETTERS_DROPPED
from libs.bus.topology import BUCKETS, STREAMS, BusLimits, ensure_stream
from libs.natsserver import EmbeddedNats
from tests.bus.helpers import Inbox, claims_consumer, dead_letters, unprepared
from tests.support.nats_fixture import settings_for


async def test_bootstrap_twice_changes_nothing(bus: Bus) -> None:
    await bus.bootstrap()
    names = {info.config.name for info in await bus.js.streams_info()}
    assert {spec.name for spec in STREAMS} | {f"KV_{b.bucket}" for b in BUCKETS} <= names


async def test_bootstrap_updates_a_stream_with_old_limits(bus: Bus) -> None:
    spec = STREAMS[0]
    await bus.js.update_stream(api.StreamConfig(name=spec.name, subjects=spec.subjects, max_age=60.0))
    await bus.bootstrap()
    info = await bus.js.stream_info(spec.name)
    assert info.config.max_age == spec.max_age


async def test_kv_buckets_are_usable(bus: Bus) -> None:
    kv = await bus.kv("gpudra_inventory")
    revision = await kv.put("node-a", b"{}")
    assert (await kv.get("node-a")).revision == revision


@pytest.mark.slow
async def test_replicated_bootstrap_and_delivery_on_a_cluster(nats_cluster: list[EmbeddedNats]) -> None:
    urls = ",".join(server.url for server in nats_cluster)
    producer = await Bus.connect(settings_for(nats_cluster[0].url), "producer")
    consumer = await Bus.connect(settings_for(urls), "consumer")
    try:
        await producer.bootstrap(BusLimits(stream_replicas=3))
        info = await producer.js.stream_info(STREAMS[0].name)
        assert info.config.num_replicas == 3
        inbox = Inbox()
        await consumer.consume(claims_consumer("clustered"), inbox.put)
        await producer.publish(unprepared("c1"))
        await inbox.wait_for(1, timeout=20)
        assert inbox.uids() == ["c1"]
    finally:
        await consumer.close()
        await producer.close()


async def test_ensure_stream_reraises_other_errors(bus: Bus) -> None:
    from nats.js.errors import BadRequestError

    with pytest.raises(BadRequestError):
        await ensure_stream(bus.js, api.StreamConfig(name="BAD", subjects=["gpudra.v1.*.claims.>"]))


async def test_every_stream_and_bucket_is_bounded(bus: Bus) -> None:
    limits = BusLimits()
    for spec in STREAMS:
        config = (await bus.js.stream_info(spec.name)).config
        assert config.max_bytes == (limits.deadletter_max_bytes if spec.deadletters else limits.stream_max_bytes)
        assert config.max_msgs_per_subject > 0
        assert config.discard == (api.DiscardPolicy.NEW if spec.deadletters else api.DiscardPolicy.OLD)
    for bucket in BUCKETS:
        config = (await bus.js.stream_info(f"KV_{bucket.bucket}")).config
        assert config.max_bytes == limits.bucket_max_bytes
        assert not config.allow_direct


async def test_a_flooding_node_evicts_only_its_own_events(bus: Bus) -> None:
    await bus.bootstrap(BusLimits(stream_max_msgs_per_subject=10))
    await bus.publish(unprepared("b-0", node="node-b"))
    for index in range(25):
        await bus.publish(unprepared(f"a-{index}"))
    state = (await bus.js.stream_info("GPUDRA_CLAIMS", subjects_filter=">")).state
    assert state.subjects == {"gpudra.v1.node-a.claims.unprepared": 10, "gpudra.v1.node-b.claims.unprepared": 1}


async def test_full_dead_letters_keep_what_they_have_and_the_consumer_carries_on(bus: Bus) -> None:
    await bus.bootstrap(BusLimits(deadletter_max_msgs_per_subject=2))
    dropped = DEADLETTERS_DROPPED.labels("full")._value.get()
    for index in range(3):
        await bus.js.publish("gpudra.v1.node-a.claims.unprepared", b"poison", headers={"Nats-Msg-Id": f"p{index}"})
    await bus.publish(unprepared("good"))
    inbox = Inbox()
    await bus.consume(claims_consumer("full"), inbox.put)
    await inbox.wait_for(1)
    kept = await dead_letters(bus, 2)
    assert [headers["gpudra-dlq-sequence"] for _, headers, _ in kept] == ["1", "2"]
    assert DEADLETTERS_DROPPED.labels("full")._value.get() == dropped + 1
    assert inbox.uids() == ["good"]
