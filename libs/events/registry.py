"""Look-ups over the catalogue: CloudEvents type → event class, and the list of commands."""

from __future__ import annotations

from typing import TypeVar

from libs.events import catalogue
from libs.events.base import Command, Event

T = TypeVar("T")


def _defined_in_catalogue(base: type[T]) -> list[type[T]]:
    found: list[type[T]] = []
    pending: list[type[T]] = list(base.__subclasses__())
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if cls.__module__.startswith(catalogue.__name__):
            found.append(cls)
    return sorted(found, key=lambda cls: (cls.__module__, cls.__name__))


EVENTS: dict[str, type[Event]] = {cls.ce_type(): cls for cls in _defined_in_catalogue(Event)}
COMMANDS: tuple[type[Command], ...] = tuple(_defined_in_catalogue(Command))


def event_class(ce_type: str) -> type[Event] | None:
    return EVENTS.get(ce_type)
