"""Whether a message is what a client published, or something the server was made to send on its behalf.

Subject permissions decide who may publish on a subject, and gpudra's subjects name the node they speak for.
But NATS also publishes for clients: a push consumer delivers to whatever subject its creator names, even
one the creator may not publish to (nats-server issue #8274), and every response goes to the reply subject
the requester chose, which the server never checks against permissions. So a client can have the server put
a message on a subject it may not use. Such relays are recognisable, and refused here:

- a consumer's delivery carries a ``$JS.ACK.`` reply subject, and a response carries no reply subject at all:
  a command (a request some service must act on) is accepted only with a reply under ``_INBOX.``, where every
  client's requests have theirs;
- a JetStream direct get returns a stored message with the headers and body its writer chose, plus
  ``Nats-Stream``/``Nats-Subject``/``Nats-Sequence``: events carrying those are refused. (gpudra's buckets do
  not allow direct gets and no role may make one; the check stands in case a bucket or a grant ever does.)

Every other relay (a JetStream API answer, a PubAck, a service's reply) is JSON that is not a CloudEvent and
not a command, so it fails to decode and is refused (dead-lettered) as such. A consumer's delivery aimed at an
event subject is stored by the stream that captures it, but under the subject it was first published on, so
no consumer of the target subject sees it (``tests/trust`` checks this against the real server); a core
subscriber does see it, under the target subject, and can tell it by its ``$JS.ACK.`` reply.
"""

from __future__ import annotations

from collections.abc import Mapping

INBOX_PREFIX = "_INBOX."
RELAY_HEADERS = ("Nats-Stream", "Nats-Subject", "Nats-Sequence")
"""Headers the server adds to a message it returns from a stream (direct get); no client sends them."""


def relayed_command(reply: str | None) -> str | None:
    """Why a request cannot be a client's command (None when it can be)."""
    if not reply:
        return "it has no reply subject: a response or a delivery relayed by the server, not a client's request"
    if not reply.startswith(INBOX_PREFIX):
        return f"its reply subject {reply[:64]!r} is not an inbox: a JetStream delivery relayed to this subject"
    return None


def relayed_delivery(reply: str | None) -> bool:
    """Whether a message a core subscription received is a JetStream consumer's delivery, not a publish."""
    return bool(reply) and (reply or "").startswith("$JS.ACK.")


def relayed_event(headers: Mapping[str, str] | None) -> str | None:
    """Why a message cannot be an event a client published (None when it can be)."""
    if headers:
        for name in RELAY_HEADERS:
            if name in headers:
                return (
                    f"relayed by the server ({name}: {headers[name][:64]}): a stored message returned to a "
                    "subject its writer may not publish on"
                )
    return None
