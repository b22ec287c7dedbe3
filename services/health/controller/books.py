"""The controller's state in the ``gpudra_remediation`` KV bucket: one entry per node and one breaker.

Key ``nodes.<node token>``: the node's book (the rules' memory), the monitors' live view, the outbox and the
faults the breaker held. Key ``breaker``: the circuit breaker. Every write is compare-and-set on the entry's
revision, so replicas that work on the same node, or a replica that lost its lease without knowing, can never
overwrite each other: the loser reads again and decides again.
"""

from __future__ import annotations

import logging
from typing import NamedTuple

import msgspec
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError, NoKeysError
from nats.js.kv import KeyValue

from libs.bus import Bus
from libs.bus.topology import REMEDIATION_BUCKET
from libs.events import node_token
from libs.events.subjects import node_from_token
from services.health.controller.live import LiveView
from services.health.controller.outbox import Pending
from services.health.remediation import Breaker, FaultDetected, NodeBook, new_book

log = logging.getLogger(__name__)

NODE_PREFIX = "nodes."
BREAKER_KEY = "breaker"
SNAPSHOT_CONSUMER_TTL = 5.0
"""Seconds the server keeps a finished snapshot's consumer (``BookStore.all``)."""


class StoredNode(msgspec.Struct, frozen=True, kw_only=True):
    schema: int = 1
    book: NodeBook
    live: LiveView = msgspec.field(default_factory=LiveView)
    outbox: tuple[Pending, ...] = ()
    held: tuple[FaultDetected, ...] = ()
    """Faults the open breaker refused; a person's breaker reset hands them back for admission."""
    steps: int = 0
    """Counts saved changes; outbox ids (and so published event ids) derive from it."""


class Versioned(NamedTuple):
    stored: StoredNode
    revision: int
    """The KV revision it was read or written at; 0: no entry yet."""


class StaleEntry(Exception):
    """Someone else wrote the entry since it was read: read again and decide again."""


def node_key(node: str) -> str:
    return NODE_PREFIX + node_token(node)


def fresh(node: str) -> Versioned:
    return Versioned(StoredNode(book=new_book(node)), 0)


_node_decoder = msgspec.json.Decoder(StoredNode)
_breaker_decoder = msgspec.json.Decoder(Breaker)
_encoder = msgspec.json.Encoder()


class BookStore:
    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv

    @classmethod
    async def open(cls, bus: Bus) -> BookStore:
        return cls(await bus.kv(REMEDIATION_BUCKET))

    async def load(self, node: str) -> Versioned:
        """The node's entry; a fresh book when there is none, or when it cannot be read (logged: the node's
        history is lost, its next faults are decided as new)."""
        try:
            entry = await self.kv.get(node_key(node))
        except KeyNotFoundError as exc:
            revision = (exc.entry.revision or 0) if exc.entry is not None else 0
            return Versioned(fresh(node).stored, revision)
        return _versioned(node, entry)

    async def save(self, node: str, stored: StoredNode, revision: int) -> int:
        """Writes if the entry is still at ``revision``; returns the new revision, else raises ``StaleEntry``."""
        try:
            return await self.kv.update(node_key(node), _encoder.encode(stored), last=revision)
        except KeyWrongLastSequenceError as exc:
            raise StaleEntry(f"remediation book of node {node} changed since revision {revision}") from exc

    async def nodes(self) -> list[str]:
        try:
            keys = await self.kv.keys()
        except NoKeysError:
            return []
        return sorted(node_from_token(k.removeprefix(NODE_PREFIX)) for k in keys if k.startswith(NODE_PREFIX))

    async def all(self) -> list[tuple[str, Versioned]]:
        """Every node's entry, by node name, read in one pass over the bucket (the last value of each key, as a
        KV watch starts) instead of one request per node: the leader's sweep reads them all every few seconds."""
        # One consumer per sweep: the server drops it soon after the watch stops, not after nats-py's 5 minutes.
        watcher = await self.kv.watch(NODE_PREFIX + ">", ignore_deletes=True, inactive_threshold=SNAPSHOT_CONSUMER_TTL)
        found: list[tuple[str, Versioned]] = []
        try:
            async for entry in watcher:
                if entry is None:  # the end of what the bucket held when the watch started
                    break
                node = node_from_token(entry.key.removeprefix(NODE_PREFIX))
                found.append((node, _versioned(node, entry)))
        finally:
            await watcher.stop()  # type: ignore[no-untyped-call]  # nats-py is untyped here
        return sorted(found, key=lambda item: item[0])


def _versioned(node: str, entry: KeyValue.Entry) -> Versioned:
    try:
        return Versioned(_node_decoder.decode(entry.value or b""), entry.revision or 0)
    except msgspec.DecodeError as exc:
        log.error("unreadable remediation book; starting the node afresh", extra={"node": node, "error": str(exc)})
        return Versioned(fresh(node).stored, entry.revision or 0)


class BreakerStore:
    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv

    async def load(self) -> tuple[Breaker, int]:
        try:
            entry = await self.kv.get(BREAKER_KEY)
        except KeyNotFoundError as exc:
            return Breaker(), (exc.entry.revision or 0) if exc.entry is not None else 0
        try:
            return _breaker_decoder.decode(entry.value or b""), entry.revision or 0
        except msgspec.DecodeError as exc:
            log.error("unreadable circuit breaker; treating it as closed", extra={"error": str(exc)})
            return Breaker(), entry.revision or 0

    async def save(self, breaker: Breaker, revision: int) -> int:
        try:
            return await self.kv.update(BREAKER_KEY, _encoder.encode(breaker), last=revision)
        except KeyWrongLastSequenceError as exc:
            raise StaleEntry(f"circuit breaker changed since revision {revision}") from exc
