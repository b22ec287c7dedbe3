"""Deduplication: a flood is one decision; the window runs from the first copy; state changes get through."""

from __future__ import annotations

import datetime as dt

import msgspec

from libs.events.catalogue.health import HealthEvent
from services.health.remediation import DedupMemory, deduplicate
from tests.health_rules.health_rules_support import NOW, health_event

WINDOW = dt.timedelta(minutes=3)


def at(event: HealthEvent, seconds: float) -> HealthEvent:
    return msgspec.structs.replace(event, detected_at=NOW + dt.timedelta(seconds=seconds))


def decisions(*events: HealthEvent, now: dt.datetime = NOW + dt.timedelta(hours=1)) -> list[bool]:
    """For each event in turn: was it decided (True) or dropped as a duplicate (False)?"""
    memory, decided = DedupMemory(), []
    for event in events:
        memory, duplicate = deduplicate(memory, event, now, WINDOW)
        decided.append(not duplicate)
    return decided


def test_a_flood_of_copies_is_one_decision() -> None:
    flood = [at(health_event(), i * 0.01) for i in range(10_000)]
    assert sum(decisions(*flood)) == 1


def test_the_window_runs_from_the_first_copy() -> None:
    event = health_event()
    assert decisions(at(event, 0), at(event, 100), at(event, 179), at(event, 181), at(event, 200)) == [
        True,
        False,
        False,
        True,
        False,
    ]


def test_other_entities_checks_and_codes_are_not_duplicates() -> None:
    events = [health_event(), health_event(device=2), health_event(codes=("64",)), health_event("thermal", ())]
    assert decisions(*events) == [True, True, True, True]


def test_a_change_between_healthy_and_unhealthy_always_gets_through() -> None:
    sick, well = health_event("gpu-lost", ()), health_event("gpu-lost", (), healthy=True)
    assert decisions(at(sick, 0), at(well, 10), at(sick, 20), at(sick, 30)) == [True, True, True, False]


def test_a_replay_keeps_the_spacing_of_detection_times() -> None:
    replay = [at(health_event(), minutes * 60) for minutes in (0, 10, 20)]
    assert decisions(*replay) == [True, True, True]


def test_memory_forgets_what_left_the_window_and_times_without_a_zone_are_utc() -> None:
    naive = msgspec.structs.replace(health_event(), detected_at=dt.datetime(2026, 3, 1, 12, 0))
    memory, _ = deduplicate(DedupMemory(), naive, NOW, WINDOW)
    assert memory.seen[0].at == NOW
    memory, duplicate = deduplicate(memory, at(health_event(device=2), 3600), NOW + dt.timedelta(hours=2), WINDOW)
    assert not duplicate
    assert len(memory.seen) == 1


def test_a_detection_time_in_the_future_counts_as_now() -> None:
    memory, _ = deduplicate(DedupMemory(), at(health_event(), 3600), NOW, WINDOW)
    assert memory.seen[0].at == NOW
