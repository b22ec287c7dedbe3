"""Publishing: CloudEvents headers, de-duplication by event id, clear errors for bad input."""

from __future__ import annotations

import pytest

from libs.bus import Bus, BusError, PayloadTooLarge
from libs.bus.connection import parse_servers
from libs.bus.topology import event_stream
from libs.events import Domain
from libs.events.catalogue import ClaimFailed, ClaimRef
from libs.settings import CommonSettings
from tests.bus.helpers import unprepared


async def test_event_carries_cloudevents_headers(bus: Bus) -> None:
    ack = await bus.publish(unprepared("u1"))
    msg = await bus.js.get_msg(event_stream(Domain.CLAIMS), ack.seq)
    headers = msg.headers or {}
    assert msg.subject == "gpudra.v1.node-a.claims.unprepared"
    assert headers["ce-specversion"] == "1.0"
    assert headers["ce-type"] == "io.gpudra.ClaimUnprepared.v1"
    assert headers["ce-source"] == "/gpudra/node-a/test"
    assert headers["ce-subject"] == "u1"
    assert headers["Nats-Msg-Id"] == headers["ce-id"]
    assert b'"uid":"u1"' in (msg.data or b"")


async def test_duplicate_publish_is_stored_once(bus: Bus) -> None:
    first = await bus.publish(unprepared("u1"), event_id="retry-me")
    second = await bus.publish(unprepared("u1"), event_id="retry-me")
    info = await bus.js.stream_info(event_stream(Domain.CLAIMS))
    assert not first.duplicate
    assert second.duplicate
    assert second.seq == first.seq
    assert info.state.messages == 1


async def test_distinct_events_are_both_stored(bus: Bus) -> None:
    await bus.publish(unprepared("u1"))
    await bus.publish(unprepared("u1"))
    info = await bus.js.stream_info(event_stream(Domain.CLAIMS))
    assert info.state.messages == 2


async def test_dotted_node_names_become_one_subject_token(bus: Bus) -> None:
    ack = await bus.publish(unprepared("u1", node="ip-10-0-0-1.ec2.internal"))
    msg = await bus.js.get_msg(event_stream(Domain.CLAIMS), ack.seq)
    assert msg.subject == "gpudra.v1.ip-10-0-0-1_ec2_internal.claims.unprepared"


async def test_oversized_event_is_refused_and_connection_survives(bus: Bus) -> None:
    huge = ClaimFailed(
        node="node-a",
        claim=ClaimRef(namespace="default", name="big", uid="u-big"),
        operation="prepare",
        error="x" * (2 * 1024 * 1024),
    )
    with pytest.raises(PayloadTooLarge, match=r"gpudra\.v1\.node-a\.claims\.failed.*over the server's limit"):
        await bus.publish(huge)
    assert (await bus.publish(unprepared("after"))).seq == 1


async def test_event_for_an_invalid_node_name_is_refused(bus: Bus) -> None:
    with pytest.raises(ValueError, match=r"'node\.\*' is not a valid Kubernetes node name"):
        await bus.publish(unprepared("u1", node="node.*"))


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://example", "bad NATS URL 'http://example'"),
        ("nats://host:port", "bad NATS URL 'nats://host:port'"),
        ("", "NATS URL is empty"),
    ],
)
def test_bad_nats_url_names_the_problem(url: str, message: str) -> None:
    with pytest.raises(BusError, match=message):
        parse_servers(url)


async def test_unreachable_server_fails_fast_with_the_url() -> None:
    settings = CommonSettings(nats_url="nats://127.0.0.1:9")
    with pytest.raises(BusError, match=r"cannot connect to NATS at nats://127\.0\.0\.1:9"):
        await Bus.connect(settings, "test")
