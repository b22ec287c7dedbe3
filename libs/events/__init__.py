"""The event catalogue: every fact and command gpudra services exchange, as typed, versioned structs."""

from libs.events.base import Command, Event, Reply
from libs.events.envelope import Envelope, EventError, MalformedEvent, UnknownEventType, decode, encode
from libs.events.registry import COMMANDS, EVENTS, event_class
from libs.events.subjects import CLUSTER, Domain, event_subject, node_token, rpc_subject

__all__ = [
    "CLUSTER",
    "COMMANDS",
    "EVENTS",
    "Command",
    "Domain",
    "Envelope",
    "Event",
    "EventError",
    "MalformedEvent",
    "Reply",
    "UnknownEventType",
    "decode",
    "encode",
    "event_class",
    "event_subject",
    "node_token",
    "rpc_subject",
]
