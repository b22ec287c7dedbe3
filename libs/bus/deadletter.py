"""The dead-letter copy of a message: the reason and where it came from, and as much of it as always fits.

Any message a stream accepted must be storable as a dead letter, or it is delivered again forever: a copy one
byte over the server's limit makes nats-server close the connection (and nats-py not reconnect), a copy the
dead-letter stream refuses stays unacked. So the copy is built to fit ``limit`` (the server's ``max_payload``
and the stream's ``max_msg_size``, whichever is smaller), counting headers as the wire does:

- gpudra's ``gpudra-dlq-*`` headers: the reason (cut to 1 KiB), subject, stream, sequence, consumer, deliveries;
- the original headers, except ``Nats-*`` ones (an ``Nats-Expected-*`` header would make the dead-letter
  stream refuse the copy); when they would take more than a quarter of the room, only the CloudEvents and trace
  headers are kept, each cut to 256 characters, and ``gpudra-dlq-headers-dropped`` counts the rest;
- the body whole, or its head with ``gpudra-dlq-truncated`` (the original size) and ``gpudra-dlq-sha256`` (of the
  whole body); the original is still in its stream at ``gpudra-dlq-stream``/``-sequence`` until it ages out.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import msgspec

REASON_LIMIT = 1024
KEPT_VALUE_LIMIT = 256
_FRAME = len(b"NATS/1.0\r\n") + len(b"\r\n")
_KEPT_WHEN_SHORT = ("ce-", "traceparent", "tracestate", "content-type")


class DeadLetter(msgspec.Struct, frozen=True, kw_only=True):
    headers: dict[str, str]
    body: bytes
    truncated: bool


def header_size(headers: Mapping[str, str]) -> int:
    """Bytes the headers take on the wire (``NATS/1.0`` line, ``key: value`` lines, blank line)."""
    return _FRAME + sum(len(key.encode()) + len(value.encode()) + 4 for key, value in headers.items())


def message_size(headers: Mapping[str, str], body: bytes) -> int:
    return header_size(headers) + len(body)


def one_line(text: str, limit: int) -> str:
    """A header value: one line, at most ``limit`` characters."""
    return " ".join(text.split())[:limit]


def dead_letter(
    body: bytes,
    original: Mapping[str, str] | None,
    *,
    reason: str,
    origin: Mapping[str, str],
    limit: int,
) -> DeadLetter:
    """The copy to publish; ``origin`` are gpudra's own ``gpudra-dlq-*`` and ``Nats-Msg-Id`` headers."""
    own = {"gpudra-dlq-reason": one_line(reason, REASON_LIMIT), **origin}
    kept, dropped = _kept_headers(original or {}, limit - header_size(own))
    headers = {**kept, **own}
    if dropped:
        headers["gpudra-dlq-headers-dropped"] = str(dropped)
    if message_size(headers, body) <= limit:
        return DeadLetter(headers=headers, body=body, truncated=False)
    headers["gpudra-dlq-truncated"] = str(len(body))
    headers["gpudra-dlq-sha256"] = hashlib.sha256(body).hexdigest()
    room = max(limit - header_size(headers), 0)
    return DeadLetter(headers=headers, body=body[:room], truncated=True)


def _kept_headers(original: Mapping[str, str], room: int) -> tuple[dict[str, str], int]:
    copied = {key: value for key, value in original.items() if not key.lower().startswith("nats-")}
    dropped = len(original) - len(copied)
    if header_size(copied) <= room // 4:
        return copied, dropped
    short = {
        key[:KEPT_VALUE_LIMIT]: one_line(value, KEPT_VALUE_LIMIT)
        for key, value in copied.items()
        if key.lower().startswith(_KEPT_WHEN_SHORT)
    }
    while short and header_size(short) > room // 4:
        short.pop(next(iter(short)))
    return short, dropped + len(copied) - len(short)
