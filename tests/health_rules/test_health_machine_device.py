"""Every transition of a device's state machine, as a table: from a state (reached by real inputs), one
input, the state it moves to and every action, in order."""

from __future__ import annotations

import pytest

from libs.events.catalogue.remediation import RemediationState
from services.health.remediation import (
    AnyInput,
    DrainFailed,
    DrainSucceeded,
    FaultDetected,
    HealthyObserved,
    NodeBook,
    PersonReset,
    RemediationConfig,
    RemediationFailed,
    RemediationSucceeded,
    VerificationFailed,
    VerificationPassed,
    record_of,
)
from tests.health_rules.health_rules_support import (
    CONFIG,
    TRANSITIONS,
    crafted,
    detected,
    drive,
    gpu,
    ready,
    summaries,
    transitions,
)

NO_FALLBACK = RemediationConfig(reset_falls_back_to_reboot=False)
ONE_TRY = RemediationConfig(reset_falls_back_to_reboot=False, max_attempts=1)

DRAINED = DrainSucceeded(device="gpu-1", cycle=1)
RESET = RemediationSucceeded(device="gpu-1", cycle=1)
RESET_FAILED = RemediationFailed(device="gpu-1", cycle=1, detail="nvml error")

PATHS: dict[str, tuple[RemediationState, list[AnyInput]]] = {
    "healthy": ("healthy", []),
    "quarantined": ("quarantined", [detected("row-remap/failed")]),
    "draining": ("draining", [detected("ecc/double-bit")]),
    "draining, then a fault for a person": ("draining", [detected("ecc/double-bit"), detected("row-remap/failed")]),
    "remediating": ("remediating", [detected("ecc/double-bit"), DRAINED]),
    "verifying": ("verifying", [detected("ecc/double-bit"), DRAINED, RESET]),
    "verifying, then a fault for a person": (
        "verifying",
        [detected("ecc/double-bit"), DRAINED, RESET, detected("row-remap/failed")],
    ),
    "drain-failed": ("drain-failed", [detected("ecc/double-bit"), DrainFailed(device="gpu-1", cycle=1, detail="PDB")]),
    "remediation-failed": ("remediation-failed", [detected("ecc/double-bit"), DRAINED, RESET_FAILED]),
}


def at(start: str) -> NodeBook:
    state, inputs = PATHS[start]
    book, _ = drive(ready(), *inputs, config=ONE_TRY)
    assert device_state(book) == state
    return book


def device_state(book: NodeBook) -> RemediationState:
    record = record_of(book, "gpu-1")
    return record.state if record else "healthy"


QUARANTINE = ["taints gpu-1=row-remap:NoSchedule", "mark quarantined", "device healthy→quarantined"]
UNTAINT = "taints gpu-1="
ECC = "taints gpu-1=ecc:NoSchedule"

TABLE: list[tuple[str, str, AnyInput, RemediationConfig, RemediationState, list[str]]] = [
    (
        "fault to reset: quarantine then partial drain",
        "healthy",
        detected("ecc/double-bit"),
        CONFIG,
        "draining",
        [
            "verdict acted",
            ECC,
            "mark draining",
            "device healthy→quarantined",
            "device quarantined→draining",
            "EvictPods gpu-1",
        ],
    ),
    (
        "fault for a person: quarantine only",
        "healthy",
        detected("row-remap/failed"),
        CONFIG,
        "quarantined",
        ["verdict acted", *QUARANTINE],
    ),
    ("application XID: recorded, no taint", "healthy", detected(13), CONFIG, "healthy", ["verdict acted"]),
    (
        "informational check: None taint, still healthy",
        "healthy",
        detected("thermal/slowdown"),
        CONFIG,
        "healthy",
        ["verdict acted", "taints gpu-1=thermal:None"],
    ),
    (
        "healthy signal clears the quarantine",
        "quarantined",
        HealthyObserved(entity=gpu(1), check="row-remap", codes=("failed",)),
        CONFIG,
        "healthy",
        [UNTAINT, "mark -", "device quarantined→healthy"],
    ),
    (
        "healthy signal for another check changes nothing",
        "quarantined",
        HealthyObserved(entity=gpu(1), check="thermal"),
        CONFIG,
        "quarantined",
        [],
    ),
    (
        "person resets a quarantine",
        "quarantined",
        PersonReset(device="gpu-1", by="alice"),
        CONFIG,
        "healthy",
        [UNTAINT, "mark -", "device quarantined→healthy"],
    ),
    (
        "another fault while quarantined adds its taint",
        "quarantined",
        detected("ecc/double-bit"),
        CONFIG,
        "quarantined",
        ["verdict acted", "taints gpu-1=ecc:NoSchedule,row-remap:NoSchedule"],
    ),
    (
        "drained: reset the GPU",
        "draining",
        DRAINED,
        CONFIG,
        "remediating",
        ["mark remediating", "device draining→remediating", "ResetDevice gpu-1 #1"],
    ),
    (
        "drain failed: a person must act",
        "draining",
        DrainFailed(device="gpu-1", cycle=1, detail="PDB"),
        CONFIG,
        "drain-failed",
        ["mark drain-failed", "device draining→drain-failed"],
    ),
    (
        "fault cleared while draining: stop and return",
        "draining",
        HealthyObserved(entity=gpu(1), check="ecc", codes=("double-bit",)),
        CONFIG,
        "healthy",
        [UNTAINT, "mark -", "device draining→healthy", "CancelDrain gpu-1"],
    ),
    (
        "person resets while draining: stop the drain",
        "draining",
        PersonReset(device="gpu-1", by="alice"),
        CONFIG,
        "healthy",
        [UNTAINT, "mark -", "device draining→healthy", "CancelDrain gpu-1"],
    ),
    (
        "drained, but a fault that needs a person arrived: wait for the person",
        "draining, then a fault for a person",
        DRAINED,
        CONFIG,
        "quarantined",
        ["mark quarantined", "device draining→quarantined"],
    ),
    (
        "person resets during the GPU reset",
        "remediating",
        PersonReset(device="gpu-1", by="alice"),
        CONFIG,
        "healthy",
        [UNTAINT, "mark -", "device remediating→healthy"],
    ),
    (
        "reset done: verify",
        "remediating",
        RESET,
        CONFIG,
        "verifying",
        ["mark verifying", "device remediating→verifying", "VerifyHealth gpu-1"],
    ),
    (
        "reset failed under the cap: try again",
        "remediating",
        RESET_FAILED,
        CONFIG,
        "remediating",
        ["mark remediating", "device remediating→remediating", "ResetDevice gpu-1 #2"],
    ),
    (
        "reset failed at the cap: give up",
        "remediating",
        RESET_FAILED,
        ONE_TRY,
        "remediation-failed",
        ["mark remediation-failed", "device remediating→remediation-failed"],
    ),
    (
        "reset failed at the cap: fall back to a reboot",
        "remediating",
        RESET_FAILED,
        RemediationConfig(max_attempts=1),
        "quarantined",
        ["mark quarantined", "device remediating→quarantined", "EscalateToNode RESTART_BM"],
    ),
    (
        "a healthy signal does not interrupt a repair",
        "remediating",
        HealthyObserved(entity=gpu(1), check="ecc", codes=("double-bit",)),
        CONFIG,
        "remediating",
        [],
    ),
    (
        "verified: back in service",
        "verifying",
        VerificationPassed(device="gpu-1", cycle=1),
        CONFIG,
        "healthy",
        [UNTAINT, "mark -", "device verifying→healthy"],
    ),
    (
        "verified, but a fault that needs a person remains",
        "verifying, then a fault for a person",
        VerificationPassed(device="gpu-1", cycle=1),
        CONFIG,
        "quarantined",
        ["taints gpu-1=row-remap:NoSchedule", "mark quarantined", "device verifying→quarantined"],
    ),
    (
        "verification failed under the cap: reset again",
        "verifying",
        VerificationFailed(device="gpu-1", cycle=1, detail="still XID"),
        CONFIG,
        "remediating",
        ["mark remediating", "device verifying→remediating", "ResetDevice gpu-1 #2"],
    ),
    (
        "verification failed at the cap: give up",
        "verifying",
        VerificationFailed(device="gpu-1", cycle=1),
        ONE_TRY,
        "remediation-failed",
        ["mark remediation-failed", "device verifying→remediation-failed"],
    ),
    (
        "person resets a failed drain",
        "drain-failed",
        PersonReset(device="gpu-1", by="alice", note="pods moved by hand"),
        CONFIG,
        "healthy",
        [UNTAINT, "mark -", "device drain-failed→healthy"],
    ),
    (
        "a failed drain ignores healthy signals: a person must act",
        "drain-failed",
        HealthyObserved(entity=gpu(1), check="ecc", codes=("double-bit",)),
        CONFIG,
        "drain-failed",
        [],
    ),
    (
        "person resets a failed remediation",
        "remediation-failed",
        PersonReset(device="gpu-1", by="alice"),
        CONFIG,
        "healthy",
        [UNTAINT, "mark -", "device remediation-failed→healthy"],
    ),
    ("stale outcome of an earlier cycle", "draining", DrainSucceeded(device="gpu-1", cycle=0), CONFIG, "draining", []),
    ("outcome in the wrong state", "verifying", DRAINED, CONFIG, "verifying", []),
    ("outcome for a device with no record", "healthy", DRAINED, CONFIG, "healthy", []),
    ("reset of a healthy device", "healthy", PersonReset(device="gpu-1", by="alice"), CONFIG, "healthy", []),
]


@pytest.mark.parametrize(
    ("start", "event", "config", "end", "expected"), [row[1:] for row in TABLE], ids=[row[0] for row in TABLE]
)
def test_device_transition(
    start: str, event: AnyInput, config: RemediationConfig, end: RemediationState, expected: list[str]
) -> None:
    book, actions = drive(at(start), event, config=config)
    assert device_state(book) == end
    assert summaries(actions) == expected


def test_the_table_covers_every_device_transition() -> None:
    seen: set[tuple[str, str]] = set()
    for _, start, event, config, _, _ in TABLE:
        _, actions = drive(at(start), event, config=config)
        seen |= transitions(actions, "device")
    assert seen == TRANSITIONS["device"]


def test_a_sticky_fault_survives_healthy_signals_until_a_person_resets_it() -> None:
    sticky = FaultDetected(fault=crafted("CONTACT_SUPPORT", scope="device", sticky=True))
    book, _ = drive(ready(), sticky, HealthyObserved(entity=gpu(1), check="row-remap", codes=("failed",)))
    assert device_state(book) == "quarantined"
    book, actions = drive(book, PersonReset(device="gpu-1", by="alice"))
    assert device_state(book) == "healthy"
    assert summaries(actions) == [UNTAINT, "mark -", "device quarantined→healthy"]


def test_the_first_repair_counts_one_remediation_for_escalation() -> None:
    book, _ = drive(at("remediating"), RESET_FAILED)
    assert len(book.history.remediations) == 1
