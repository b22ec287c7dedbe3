"""Recent remediations from the events: one record per remediation, its steps in order, finished or not."""

from __future__ import annotations

import datetime as dt

from libs.events.catalogue.health import EntityRef
from libs.events.catalogue.remediation import (
    RemediationState,
    RemediationStateChanged,
    RemediationStepCompleted,
    Step,
)
from services.health.controller.history import Timed, remediations

T0 = dt.datetime(2026, 12, 4, 12, 0, tzinfo=dt.UTC)
GPU = EntityRef(kind="gpu", id="GPU-2", device="gpu-2")
NODE = EntityRef(kind="node", id="node-a")


def changed(seconds: float, entity: EntityRef, previous: RemediationState, state: RemediationState) -> Timed:
    event = RemediationStateChanged(
        node="node-a", scope="device" if entity.device else "node", entity=entity, previous=previous, state=state,
        fault="xid-48",
    )  # fmt: skip
    return T0 + dt.timedelta(seconds=seconds), event


def step(seconds: float, entity: EntityRef, name: Step, ms: float) -> Timed:
    event = RemediationStepCompleted(node="node-a", entity=entity, step=name, outcome="succeeded", duration_ms=ms)
    return T0 + dt.timedelta(seconds=seconds), event


def test_a_whole_remediation_and_one_still_going() -> None:
    events = [
        changed(0, GPU, "healthy", "quarantined"),
        changed(0.1, GPU, "quarantined", "draining"),
        step(1, GPU, "drain", 900),
        changed(1, GPU, "draining", "remediating"),
        step(2, GPU, "gpu-reset", 800),
        changed(2, NODE, "healthy", "quarantined"),  # the node's own, going on at the end
        changed(2, GPU, "remediating", "verifying"),
        step(7, GPU, "verify", 5000),
        changed(7, GPU, "verifying", "healthy"),
        step(8, GPU, "evict", 10),  # after the end: belongs to no remediation of this device
    ]
    done, going = remediations(events)
    assert (done.entity, done.fault, done.outcome, done.ended) == (
        "gpu-2",
        "xid-48",
        "healthy",
        T0 + dt.timedelta(seconds=7),
    )
    assert [(s.step, s.duration_ms) for s in done.steps] == [("drain", 900), ("gpu-reset", 800), ("verify", 5000)]
    assert (going.entity, going.ended, going.outcome, going.steps) == ("node", None, "", [])


def test_a_failed_remediation_ends_there_and_the_next_starts_anew() -> None:
    events = [
        changed(0, GPU, "healthy", "quarantined"),
        changed(1, GPU, "quarantined", "remediation-failed"),
        changed(5, GPU, "remediation-failed", "healthy"),  # a person's reset: not a new remediation
        changed(9, GPU, "healthy", "quarantined"),
    ]
    first, second = remediations(events)
    assert (first.outcome, second.started, second.outcome) == ("remediation-failed", T0 + dt.timedelta(seconds=9), "")
