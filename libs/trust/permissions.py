"""What one NATS user may do, as plain sets of subjects (the JWT and the server config are built from it)."""

from __future__ import annotations

from collections.abc import Iterable

import msgspec


class Permissions(msgspec.Struct, frozen=True, kw_only=True):
    """What one NATS user may do. Deny wins over allow; ``respond`` lets it answer requests it received."""

    publish: frozenset[str] = frozenset()
    subscribe: frozenset[str] = frozenset()
    publish_deny: frozenset[str] = frozenset()
    subscribe_deny: frozenset[str] = frozenset()
    respond: bool = False

    def __or__(self, other: Permissions) -> Permissions:
        return Permissions(
            publish=self.publish | other.publish,
            subscribe=self.subscribe | other.subscribe,
            publish_deny=self.publish_deny | other.publish_deny,
            subscribe_deny=self.subscribe_deny | other.subscribe_deny,
            respond=self.respond or other.respond,
        )


def union(parts: Iterable[Permissions]) -> Permissions:
    total = Permissions()
    for part in parts:
        total |= part
    return total


EVERYTHING = Permissions(publish=frozenset({">"}), subscribe=frozenset({">"}), respond=True)
"""For test harnesses and benches that play every party; ``gpudra up`` never issues it."""
