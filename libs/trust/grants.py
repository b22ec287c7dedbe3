"""Permissions as sets of NATS subjects, built from what a client does on the bus, never written by hand.

Each builder turns one kind of bus use (publish these events, serve these commands, read this KV key, pull
from that durable consumer) into the exact subjects nats-py sends and receives for it (traced against a real
server: see docs/security.md). A role in ``roles.py`` is the union of its builders, so a new event, command,
bucket or consumer gets its permission from the same constants the code uses.

``node`` is a Kubernetes node name, ``CLUSTER`` for cluster-wide facts, or ``ANY`` for every node (a ``*``
token): only cluster-wide roles get ``ANY``.
"""

from __future__ import annotations

from libs.bus import topology
from libs.events import Command, Event
from libs.events.subjects import DEADLETTER_ROOT, ROOT, deadletter_subject, inbox_prefix, node_token
from libs.trust.permissions import Permissions

ANY = "*"
"""Every node: the subject token becomes a wildcard."""

JS_API = "$JS.API"


def token(node: str) -> str:
    return ANY if node == ANY else node_token(node)


def _pub(*subjects: str) -> Permissions:
    return Permissions(publish=frozenset(subjects))


def _sub(*subjects: str) -> Permissions:
    return Permissions(subscribe=frozenset(subjects))


# --- identity ---------------------------------------------------------------------------------------------


def inbox(principal: str, node: str) -> Permissions:
    """Replies to this client only: reading others' would also let it settle (ack, terminate) their
    JetStream deliveries, which arrive in the same inboxes."""
    return _sub(f"{inbox_prefix(principal, node)}.>")


# --- events -----------------------------------------------------------------------------------------------


def publish_events(node: str, *events: type[Event]) -> Permissions:
    return _pub(*(f"{ROOT}.{token(node)}.{event.domain}.{event.topic}" for event in events))


def watch_events() -> Permissions:
    """Core subscriptions to events as they are published (``gpudra events tail``); never the commands.

    ``gpudra.v1.>`` is allowed with the commands denied: nats-server accepts the wide subscription and drops
    the messages the deny matches before they reach the client.
    """
    return Permissions(
        subscribe=frozenset({f"{ROOT}.>", f"{DEADLETTER_ROOT}.>"}),
        subscribe_deny=frozenset({f"{ROOT}.*.rpc.>"}),
    )


# --- commands ---------------------------------------------------------------------------------------------


def _rpc(node: str, command: type[Command]) -> str:
    return f"{ROOT}.{token(node)}.rpc.{command.service}.{command.endpoint}"


def serve(name: str, node: str, *commands: type[Command]) -> Permissions:
    """A ``nats.micro`` service ``name``: its endpoints, the ``$SRV`` discovery requests, and its answers."""
    discovery = {"$SRV.*", f"$SRV.*.{name}", f"$SRV.*.{name}.*"}
    return Permissions(subscribe=frozenset({*discovery, *(_rpc(node, c) for c in commands)}), respond=True)


def call(node: str, *commands: type[Command]) -> Permissions:
    return _pub(*(_rpc(node, command) for command in commands))


def list_services() -> Permissions:
    """``$SRV.INFO``/``PING``/``STATS`` to every service: ``gpudra services`` and the supervisor's wait."""
    return _pub("$SRV.*", "$SRV.*.*", "$SRV.*.*.*")


# --- JetStream --------------------------------------------------------------------------------------------


def read_streams(*streams: str) -> Permissions:
    """Ephemeral and ordered consumers (KV watches, replays, ``kv.keys``) on these streams: read-only.

    The unnamed ``CONSUMER.CREATE`` cannot create or change a durable; see docs/security.md for what it can
    do (deliver to any subject) and why commands and events refuse such deliveries.
    """
    subjects: set[str] = set()
    for stream in streams:
        subjects |= {
            f"{JS_API}.STREAM.INFO.{stream}",
            f"{JS_API}.CONSUMER.CREATE.{stream}",
            f"{JS_API}.CONSUMER.INFO.{stream}.*",
            f"$JS.FC.{stream}.>",
        }
    return _pub(*subjects)


def own_consumers(*streams: str) -> Permissions:
    """Consumers a client names and keeps itself, push or pull, durable or not (an extender's): create,
    look up, fetch, ack and delete them. gpudra's own durables stay off limits (``others_keep_off``)."""
    subjects: set[str] = {f"{JS_API}.STREAM.NAMES"}  # nats-py finds the stream of a subject this way
    for stream in streams:
        subjects |= {
            f"{JS_API}.CONSUMER.CREATE.{stream}.>",
            f"{JS_API}.CONSUMER.DURABLE.CREATE.{stream}.*",
            f"{JS_API}.CONSUMER.MSG.NEXT.{stream}.*",
            f"{JS_API}.CONSUMER.DELETE.{stream}.*",
            f"$JS.ACK.{stream}.>",
        }
    return _pub(*subjects) | read_streams(*streams)


def consume(durable: topology.DurableSpec) -> Permissions:
    """One durable pull consumer: create it as bootstrap did, fetch, ack, and dead-letter what fails."""
    stream, name = durable.stream, durable.name
    return _pub(
        f"{JS_API}.CONSUMER.CREATE.{stream}.{name}",
        f"{JS_API}.CONSUMER.INFO.{stream}.{name}",
        f"{JS_API}.CONSUMER.MSG.NEXT.{stream}.{name}",
        f"$JS.ACK.{stream}.{name}.>",
        f"{JS_API}.STREAM.INFO.{stream}",
        deadletter_subject(stream, name),
    )


def others_keep_off(durable: topology.DurableSpec) -> Permissions:
    """Everyone but the owner: no stealing (fetching) or settling (acking) a durable's deliveries."""
    stream, name = durable.stream, durable.name
    return Permissions(
        publish_deny=frozenset(
            {
                f"{JS_API}.CONSUMER.MSG.NEXT.{stream}.{name}",
                f"$JS.ACK.{stream}.{name}.>",
                f"{JS_API}.CONSUMER.CREATE.{stream}.{name}",
                f"{JS_API}.CONSUMER.CREATE.{stream}.{name}.>",
                f"{JS_API}.CONSUMER.DURABLE.CREATE.{stream}.{name}",
                f"{JS_API}.CONSUMER.DELETE.{stream}.{name}",
            }
        )
    )


def kv_read(bucket: str) -> Permissions:
    """``kv.get`` and watching the bucket, any key: reads go through the JetStream API (no direct gets, see
    libs/bus/provenance.py), whose request names the key in its body, where no permission can see it."""
    stream = topology.kv_stream(bucket)
    return _pub(f"{JS_API}.STREAM.MSG.GET.{stream}") | read_streams(stream)


def kv_write(bucket: str, key: str = ">") -> Permissions:
    """Put, create, update, delete and purge of the keys matching ``key`` (all are publishes to the key)."""
    return _pub(f"$KV.{bucket}.{key}") | kv_read(bucket)


def admin() -> Permissions:
    """The whole JetStream API: creating and changing streams, buckets and consumers (bootstrap only)."""
    return _pub(f"{JS_API}.>")
