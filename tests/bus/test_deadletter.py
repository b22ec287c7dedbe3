"""Dead letters always fit: any message a stream accepted can be kept as a dead letter, so a poison message ends
there instead of coming back forever (or, one byte over the limit, closing the consumer's connection)."""

from __future__ import annotations

import hashlib

from hypothesis import given, settings
from hypothesis import strategies as st

from libs.bus import Bus
from libs.bus.deadletter import dead_letter, header_size, message_size
from libs.bus.topology import MAX_EVENT_BYTES
from libs.events import encode
from tests.bus.helpers import Inbox, claims_consumer, dead_letters, unprepared

LIMIT = 1024 * 1024
ORIGIN = {
    "gpudra-dlq-subject": "gpudra.v1.node-a.claims.unprepared",
    "gpudra-dlq-stream": "GPUDRA_CLAIMS",
    "gpudra-dlq-sequence": "12345",
    "gpudra-dlq-consumer": "some-consumer",
    "gpudra-dlq-deliveries": "5",
    "Nats-Msg-Id": "dlq:GPUDRA_CLAIMS:12345:some-consumer",
}
names = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_", min_size=1, max_size=300)
values = st.one_of(
    st.text(max_size=200).map(lambda t: " ".join(t.split())),
    st.integers(0, 600_000).map(lambda n: "v" * n),
)


@settings(max_examples=150, deadline=None)
@given(
    size=st.integers(0, 2 * LIMIT),
    original=st.dictionaries(names, values, max_size=12),
    reason=st.text(max_size=5000),
    limit=st.sampled_from([LIMIT, 64 * 1024, 8 * 1024]),
)
def test_the_copy_fits_whatever_came_in(size: int, original: dict[str, str], reason: str, limit: int) -> None:
    body = b"\xff" * size
    copy = dead_letter(body, original, reason=reason, origin=ORIGIN, limit=limit)
    assert message_size(copy.headers, copy.body) <= limit
    assert {key: copy.headers[key] for key in ORIGIN} == ORIGIN
    assert not [key for key in copy.headers if key.lower().startswith("nats-") and key != "Nats-Msg-Id"]
    if copy.truncated:
        assert copy.headers["gpudra-dlq-truncated"] == str(size)
        assert copy.headers["gpudra-dlq-sha256"] == hashlib.sha256(body).hexdigest()
        assert body.startswith(copy.body)
    else:
        assert copy.body == body


def test_a_message_that_fits_keeps_its_headers_but_not_its_expectations() -> None:
    """``Nats-Expected-*`` on the copy would make the dead-letter stream refuse it: the poison would stay."""
    original = {"ce-id": "1", "ce-type": "x", "Nats-Expected-Last-Sequence": "7", "Nats-Msg-Id": "1"}
    copy = dead_letter(b"{}", original, reason="bad", origin=ORIGIN, limit=LIMIT)
    assert (copy.headers["ce-id"], copy.headers["ce-type"], copy.body, copy.truncated) == ("1", "x", b"{}", False)
    assert "Nats-Expected-Last-Sequence" not in copy.headers
    assert copy.headers["gpudra-dlq-headers-dropped"] == "2"  # and the original Nats-Msg-Id
    assert copy.headers["Nats-Msg-Id"] == ORIGIN["Nats-Msg-Id"]


async def test_a_poison_event_at_the_size_limit_is_dead_lettered_and_the_consumer_carries_on(bus: Bus) -> None:
    """The issue's attack: an undecodable body just under the limit with CloudEvents headers."""
    headers, _ = encode(unprepared("poison"), source="/gpudra/node-a/test")
    body = b"\xff" * (MAX_EVENT_BYTES - header_size(headers) - 64)
    await bus.js.publish("gpudra.v1.node-a.claims.unprepared", body, headers=headers)
    inbox = Inbox()
    await bus.consume(claims_consumer("at-limit"), inbox.put)
    [(_, kept, data)] = await dead_letters(bus, 1)
    await bus.publish(unprepared("after"))
    await inbox.wait_for(1)
    assert bus.nc.is_connected
    assert inbox.uids() == ["after"]
    assert kept["gpudra-dlq-truncated"] == str(len(body))
    assert kept["gpudra-dlq-sha256"] == hashlib.sha256(body).hexdigest()
    assert kept["ce-id"] == headers["ce-id"]
    assert "data is not JSON" in kept["gpudra-dlq-reason"]
    assert body.startswith(data)
