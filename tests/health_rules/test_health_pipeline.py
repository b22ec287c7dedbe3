"""From health events to decisions: dedup, classify, escalate, then the state machine, end to end."""

from __future__ import annotations

import datetime as dt

import msgspec
import pytest

from libs.events.catalogue.health import HealthEvent
from services.health.catalogue import MalformedHealthEvent, default_catalogue
from services.health.remediation import (
    Action,
    AnyInput,
    FaultDetected,
    HealthyObserved,
    NodeBook,
    assess,
    record_of,
    step,
)
from tests.health_rules.health_rules_support import CONFIG, NOW, gpu, health_event, ready, summaries

CATALOGUE = default_catalogue()


def decide(book: NodeBook, *events: HealthEvent, now: dt.datetime = NOW) -> tuple[NodeBook, list[list[Action]]]:
    """Each event through ``assess`` and, unless dropped, ``step``: the actions of every decision."""
    decisions: list[list[Action]] = []
    for event in events:
        book, item = assess(book, event, CATALOGUE, now, event_id="e-1")
        if item is not None:
            book, actions = step(book, item, now, CONFIG)
            decisions.append(actions)
    return book, decisions


def test_a_flood_of_duplicate_xids_is_decided_once() -> None:
    book, decisions = decide(ready(), *[health_event() for _ in range(500)])
    assert len(decisions) == 1
    assert summaries(decisions[0])[:2] == ["verdict acted", "taints gpu-1=xid:NoSchedule"]
    assert len(book.history.xids) == 1


def test_the_verdict_names_its_source_event() -> None:
    _, decisions = decide(ready(), health_event())
    publish = decisions[0][0]
    assert msgspec.to_builtins(publish)["event"]["source_event_ids"] == ["e-1"]


def test_a_healthy_event_becomes_a_healthy_signal() -> None:
    _, item = assess(ready(), health_event("gpu-lost", ("gpu-lost",), healthy=True), CATALOGUE, NOW)
    assert item == HealthyObserved(entity=gpu(1), check="gpu-lost", codes=("gpu-lost",))


def test_repeated_application_xids_escalate_across_windows() -> None:
    first = health_event("xid", ("13",))
    again = msgspec.structs.replace(first, detected_at=NOW + dt.timedelta(hours=1))
    book, decisions = decide(ready(), first, again, now=NOW + dt.timedelta(hours=1))
    assert summaries(decisions[1])[:2] == ["verdict acted", "taints gpu-1=xid:NoSchedule"]
    record = record_of(book, "gpu-1")
    assert record is not None
    assert record.state == "quarantined"


def test_a_malformed_event_raises_and_an_event_for_another_node_is_refused() -> None:
    with pytest.raises(MalformedHealthEvent):
        assess(ready(), health_event("xid", ()), CATALOGUE, NOW)
    with pytest.raises(ValueError, match="health event from node other offered to the book of node dgx-01"):
        assess(ready(), msgspec.structs.replace(health_event(), node="other"), CATALOGUE, NOW)


def test_an_unmonitored_device_is_recorded_and_cleared_by_its_healthy_event() -> None:
    dead = health_event("monitor", ("unmonitored", "event-stream", "pollers"))
    book, decisions = decide(ready(), dead)
    assert summaries(decisions[0]) == ["verdict acted", "taints gpu-1=monitor:None"]
    back = msgspec.structs.replace(dead, healthy=True)
    book, decisions = decide(book, back)
    assert summaries(decisions[0]) == ["taints gpu-1="]
    assert book.devices == ()


def test_a_healthy_event_clears_only_the_code_it_names() -> None:
    book, _ = decide(ready(), health_event("row-remap", ("pending",)), health_event("row-remap", ("failed",)))
    book, _ = decide(book, health_event("row-remap", ("pending",), healthy=True))
    record = record_of(book, "gpu-1")
    assert record is not None
    assert [c.fault.name for c in record.conditions] == ["row-remap-failed"]


def test_an_input_round_trips_as_json() -> None:
    _, item = assess(ready(), health_event(), CATALOGUE, NOW)
    assert isinstance(item, FaultDetected)
    assert msgspec.json.decode(msgspec.json.encode(item), type=AnyInput) == item
