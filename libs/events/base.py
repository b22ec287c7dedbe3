"""Base classes of the catalogue.

An ``Event`` is a past-tense fact published to JetStream (durable, replayable); a ``Command`` is an
imperative request answered by one ``Reply`` over NATS request/reply. Each event class declares where it
lives (domain and topic, which make its subject) and its schema version (which makes its CloudEvents type).

Evolution rule: within one version, fields may only be added with defaults, and receivers ignore fields
they do not know, so an older consumer keeps working; anything else is a new version (``ce-type`` ``.v2``).
"""

from __future__ import annotations

from typing import ClassVar

import msgspec

CE_TYPE_PREFIX = "io.gpudra"


class Event(msgspec.Struct, frozen=True, kw_only=True):
    """A fact about one node (or ``CLUSTER``); ``node`` becomes a subject token."""

    domain: ClassVar[str]
    topic: ClassVar[str]
    version: ClassVar[int] = 1
    summary: ClassVar[str] = ""

    node: str

    @classmethod
    def ce_type(cls) -> str:
        return f"{CE_TYPE_PREFIX}.{cls.__name__}.v{cls.version}"

    def ce_subject(self) -> str:
        """What the event is about (CloudEvents ``subject``): a claim uid, device, node..."""
        return self.node


class Reply(msgspec.Struct, frozen=True, kw_only=True):
    """The answer to a command; failures of the whole request travel as a coded error instead."""


class Command(msgspec.Struct, frozen=True, kw_only=True):
    """A request served by one node's service; ``endpoint`` names the service operation."""

    service: ClassVar[str]
    endpoint: ClassVar[str]
    reply: ClassVar[type[Reply]]
    summary: ClassVar[str] = ""
