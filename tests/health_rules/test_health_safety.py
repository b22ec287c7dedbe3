"""Safety: dry-run, the breaker's hold, the opt-out label, and faults that must only be recorded."""

from __future__ import annotations

import pytest

from libs.events.catalogue.health import FaultClassified
from libs.events.catalogue.remediation import RemediationStateChanged
from services.health.remediation import (
    Action,
    FaultDetected,
    InventoryObserved,
    NodeBook,
    NodeObserved,
    Publish,
    RemediationConfig,
    needs_admission,
    new_book,
    node_status,
    record_of,
    step,
)
from tests.health_rules.health_rules_support import (
    CONFIG,
    NODE,
    NOW,
    detected,
    drive,
    fault,
    ready,
    summaries,
)

DRY = RemediationConfig(dry_run=True)
OPT_OUT = {"gpu.gpudra.io/remediation": "disabled"}


def verdict(actions: list[Action]) -> FaultClassified:
    first = actions[0]
    assert isinstance(first, Publish)
    assert isinstance(first.event, FaultClassified)
    return first.event


def test_dry_run_moves_the_state_but_marks_every_action_and_event() -> None:
    book, actions = drive(ready(), detected(79), config=DRY)
    assert book.record.state == "draining"
    assert verdict(actions).disposition == "dry-run"
    assert {a.disposition for a in actions if not isinstance(a, Publish)} == {"dry-run"}
    changes = [a.event for a in actions if isinstance(a, Publish) and isinstance(a.event, RemediationStateChanged)]
    assert [c.dry_run for c in changes] == [True, True]
    assert {a.disposition for a in actions if isinstance(a, Publish)} == {"perform"}


def test_a_held_quarantine_changes_nothing_and_reports_what_it_would_have_done() -> None:
    book = ready()
    held, actions = step(book, FaultDetected(fault=fault(79), held=True), NOW, CONFIG)
    assert held == book
    assert verdict(actions).disposition == "held"
    assert "circuit breaker open" in verdict(actions).reason
    assert {a.disposition for a in actions[1:]} == {"held"}
    assert "Cordon" in summaries(actions)


@pytest.mark.parametrize(
    ("book", "event", "why"),
    [
        (ready(labels=OPT_OUT), detected(79), "opted out (label gpu.gpudra.io/remediation=disabled)"),
        (new_book(NODE), detected(79), "no known device inventory"),
        (ready(), detected(48, device=9), "device 'gpu-9' is not in node dgx-01's inventory"),
        (ready(), detected("fan-speed"), "check 'fan-speed' code '' is not in the fault catalogue"),
    ],
    ids=["opted out", "unknown node", "unknown device", "unknown check"],
)
def test_faults_that_are_only_recorded(book: NodeBook, event: FaultDetected, why: str) -> None:
    after, actions = step(book, event, NOW, CONFIG)
    assert after == book
    assert summaries(actions) == ["verdict recorded"]
    assert why in verdict(actions).reason
    assert not needs_admission(book, event.fault, CONFIG)


def test_only_a_fatal_fault_on_a_healthy_entity_asks_the_breaker() -> None:
    book = ready()
    assert needs_admission(book, fault(48), CONFIG)
    assert needs_admission(book, fault(79), CONFIG)
    assert not needs_admission(book, fault(13), CONFIG), "informational"
    quarantined, _ = drive(book, detected(48))
    assert not needs_admission(quarantined, fault(64), CONFIG), "gpu-1 is already quarantined"
    assert needs_admission(quarantined, fault(64, device=2), CONFIG)


def test_a_node_can_opt_out_after_its_quarantine_began() -> None:
    book, _ = drive(ready(), detected(48))
    book, actions = drive(book, NodeObserved(unschedulable=False, labels=OPT_OUT), detected(64, device=2))
    assert summaries(actions) == ["verdict recorded"]
    assert record_of(book, "gpu-1") is not None


def test_the_node_label_shows_the_worst_state_and_the_annotation_every_entity() -> None:
    book, _ = drive(ready(), detected("row-remap/failed", device=2), detected(48))
    state, reason = node_status(book)
    assert state == "draining"
    assert reason.startswith("gpu-1: draining (evicting the pods using gpu-1")
    assert "gpu-2: quarantined (row-remap-failed: row remapping failed" in reason


def test_the_same_fault_again_keeps_one_condition_and_its_start() -> None:
    book, _ = drive(ready(), detected("row-remap/failed"))
    later, actions = drive(book, detected("row-remap/failed"))
    record = record_of(later, "gpu-1")
    assert record is not None
    assert len(record.conditions) == 1
    assert summaries(actions) == ["verdict acted"]


def test_inventory_arrives_after_the_book() -> None:
    book, actions = step(new_book(NODE), InventoryObserved(devices=("gpu-0",)), NOW, CONFIG)
    assert book.inventory == ("gpu-0",)
    assert actions == []
