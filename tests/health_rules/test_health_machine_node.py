"""Every transition of the node's state machine, its cordon rules, and how a reboot takes over the repair
of the node's devices."""

from __future__ import annotations

import pytest

from libs.events.catalogue.remediation import RemediationState
from services.health.remediation import (
    AnyInput,
    DrainFailed,
    DrainSucceeded,
    EscalateToNode,
    FaultDetected,
    HealthyObserved,
    NodeBook,
    NodeObserved,
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

ONE_TRY = RemediationConfig(max_attempts=1)
DRAINED = DrainSucceeded(cycle=1)
REBOOTED = RemediationSucceeded(cycle=1)
STICKY = FaultDetected(fault=crafted("CONTACT_SUPPORT", sticky=True))

FOR_A_PERSON = FaultDetected(fault=crafted("CONTACT_SUPPORT"))
PATHS: dict[str, tuple[RemediationState, list[AnyInput]]] = {
    "healthy": ("healthy", []),
    "quarantined": ("quarantined", [STICKY]),
    "quarantined, not sticky": ("quarantined", [FOR_A_PERSON]),
    "draining": ("draining", [detected(79)]),
    "draining, then a fault for a person": ("draining", [detected(79), FOR_A_PERSON]),
    "remediating": ("remediating", [detected(79), DRAINED]),
    "verifying": ("verifying", [detected(79), DRAINED, REBOOTED]),
    "verifying, then a fault for a person": ("verifying", [detected(79), DRAINED, REBOOTED, FOR_A_PERSON]),
    "drain-failed": ("drain-failed", [detected(79), DrainFailed(cycle=1, detail="PDB blocks eviction")]),
    "remediation-failed": ("remediation-failed", [detected(79), DRAINED, RemediationFailed(cycle=1)]),
}
CORDONED = NodeObserved(unschedulable=True)


def at(start: str, *, cordoned_before: bool = False) -> NodeBook:
    state, inputs = PATHS[start]
    book, _ = drive(ready(unschedulable=cordoned_before), *inputs, config=ONE_TRY)
    assert book.record.state == state
    return book


GPU_LOST_TAINT = "taints gpu-1=gpu-lost:NoExecute"
RELEASE = ["taints gpu-1=", "UntaintNode", "Uncordon", "mark -"]

TABLE: list[tuple[str, str, AnyInput, RemediationConfig, RemediationState, list[str]]] = [
    (
        "fault to reboot: quarantine, cordon, full drain",
        "healthy",
        detected(79),
        CONFIG,
        "draining",
        [
            "verdict acted",
            "taints gpu-1=xid:NoExecute",
            "Cordon",
            "TaintNode",
            "mark draining",
            "node healthy→quarantined",
            "node quarantined→draining",
            "EvictPods node",
        ],
    ),
    (
        "fault for a person: cordon and wait",
        "healthy",
        STICKY,
        CONFIG,
        "quarantined",
        [
            "verdict acted",
            "taints gpu-1=row-remap:NoSchedule",
            "Cordon",
            "TaintNode",
            "mark quarantined",
            "node healthy→quarantined",
        ],
    ),
    (
        "informational node fault: recorded",
        "healthy",
        FaultDetected(fault=crafted("NONE")),
        CONFIG,
        "healthy",
        ["verdict acted", "taints gpu-1=row-remap:None"],
    ),
    (
        "healthy signal clears a quarantine that is not sticky",
        "quarantined, not sticky",
        HealthyObserved(entity=gpu(1), check="row-remap", codes=("failed",)),
        CONFIG,
        "healthy",
        [*RELEASE, "node quarantined→healthy"],
    ),
    (
        "drained, but a fault that needs a person arrived",
        "draining, then a fault for a person",
        DRAINED,
        CONFIG,
        "quarantined",
        ["mark quarantined", "node draining→quarantined"],
    ),
    (
        "person resets during the reboot",
        "remediating",
        PersonReset(by="alice"),
        CONFIG,
        "healthy",
        [*RELEASE, "node remediating→healthy"],
    ),
    (
        "verified, but a fault that needs a person remains",
        "verifying, then a fault for a person",
        VerificationPassed(cycle=1),
        CONFIG,
        "quarantined",
        ["taints gpu-1=row-remap:NoSchedule", "mark quarantined", "node verifying→quarantined"],
    ),
    (
        "drained: reboot",
        "draining",
        DRAINED,
        CONFIG,
        "remediating",
        ["mark remediating", "node draining→remediating", "RebootNode bare-metal #1"],
    ),
    (
        "drain failed",
        "draining",
        DrainFailed(cycle=1),
        CONFIG,
        "drain-failed",
        ["mark drain-failed", "node draining→drain-failed"],
    ),
    (
        "person resets while draining",
        "draining",
        PersonReset(by="alice"),
        CONFIG,
        "healthy",
        [*RELEASE, "node draining→healthy", "CancelDrain node"],
    ),
    (
        "rebooted: verify every device",
        "remediating",
        REBOOTED,
        CONFIG,
        "verifying",
        ["mark verifying", "node remediating→verifying", "VerifyHealth node"],
    ),
    (
        "reboot failed under the cap: reboot again",
        "remediating",
        RemediationFailed(cycle=1),
        CONFIG,
        "remediating",
        ["mark remediating", "node remediating→remediating", "RebootNode bare-metal #2"],
    ),
    (
        "reboot failed at the cap: a person must act (no fallback above a reboot)",
        "remediating",
        RemediationFailed(cycle=1),
        ONE_TRY,
        "remediation-failed",
        ["mark remediation-failed", "node remediating→remediation-failed"],
    ),
    (
        "verified: uncordon, untaint",
        "verifying",
        VerificationPassed(cycle=1),
        CONFIG,
        "healthy",
        ["taints gpu-1=", "UntaintNode", "Uncordon", "mark -", "node verifying→healthy"],
    ),
    (
        "verification failed: reboot again",
        "verifying",
        VerificationFailed(cycle=1),
        CONFIG,
        "remediating",
        ["mark remediating", "node verifying→remediating", "RebootNode bare-metal #2"],
    ),
    (
        "verification failed at the cap",
        "verifying",
        VerificationFailed(cycle=1),
        ONE_TRY,
        "remediation-failed",
        ["mark remediation-failed", "node verifying→remediation-failed"],
    ),
    (
        "a sticky fault ignores healthy signals",
        "quarantined",
        HealthyObserved(entity=gpu(1), check="row-remap", codes=("failed",)),
        CONFIG,
        "quarantined",
        [],
    ),
    (
        "person resets a sticky quarantine",
        "quarantined",
        PersonReset(by="alice", note="GPU replaced"),
        CONFIG,
        "healthy",
        [*RELEASE, "node quarantined→healthy"],
    ),
    (
        "person resets a failed drain",
        "drain-failed",
        PersonReset(by="alice"),
        CONFIG,
        "healthy",
        [*RELEASE[:1], "UntaintNode", "Uncordon", "mark -", "node drain-failed→healthy"],
    ),
    (
        "person resets a failed remediation",
        "remediation-failed",
        PersonReset(by="alice"),
        CONFIG,
        "healthy",
        [*RELEASE, "node remediation-failed→healthy"],
    ),
    ("stale outcome", "remediating", RemediationSucceeded(cycle=7), CONFIG, "remediating", []),
]


@pytest.mark.parametrize(
    ("start", "event", "config", "end", "expected"), [row[1:] for row in TABLE], ids=[row[0] for row in TABLE]
)
def test_node_transition(
    start: str, event: AnyInput, config: RemediationConfig, end: RemediationState, expected: list[str]
) -> None:
    book, actions = drive(at(start), event, config=config)
    assert book.record.state == end
    assert summaries(actions) == expected


def test_the_table_covers_every_node_transition() -> None:
    seen: set[tuple[str, str]] = set()
    for _, start, event, config, _, _ in TABLE:
        _, actions = drive(at(start), event, config=config)
        seen |= transitions(actions, "node")
    assert seen == TRANSITIONS["node"]


def test_a_vm_restart_fault_restarts_the_vm() -> None:
    _, actions = drive(ready(), detected(151), DRAINED)
    assert summaries(actions)[-1] == "RebootNode vm #1"


def test_gpu_back_while_draining_cancels_the_reboot() -> None:
    book, actions = drive(ready(), detected("gpu-lost/gpu-lost"), HealthyObserved(entity=gpu(1), check="gpu-lost"))
    assert book.record.state == "healthy"
    assert summaries(actions) == [
        "taints gpu-1=",
        "UntaintNode",
        "Uncordon",
        "mark -",
        "node draining→healthy",
        "CancelDrain node",
    ]


# --- cordon: keep one that was there before, treat an uncordon by hand as a cancel ---------------------


def test_a_cordon_that_existed_before_is_kept_through_quarantine_and_recovery() -> None:
    book = at("verifying", cordoned_before=True)
    assert book.cordoned_before
    book, actions = drive(book, VerificationPassed(cycle=1))
    assert "Uncordon" not in summaries(actions)
    assert "UntaintNode" in summaries(actions)


def test_quarantining_an_already_cordoned_node_does_not_cordon_it_again() -> None:
    _, actions = drive(ready(unschedulable=True), detected(79))
    assert "Cordon" not in summaries(actions)
    assert "TaintNode" in summaries(actions)


def test_an_uncordon_by_hand_cancels_the_remediation_without_uncordoning_again() -> None:
    book, _ = drive(at("draining"), CORDONED)
    book, actions = drive(book, NodeObserved(unschedulable=False))
    assert book.record.state == "healthy"
    assert summaries(actions) == ["taints gpu-1=", "UntaintNode", "mark -", "node draining→healthy", "CancelDrain node"]
    assert "uncordoned by hand" in book.record.reason


def test_a_schedulable_node_before_the_cordon_lands_is_not_a_cancel() -> None:
    book, actions = drive(at("draining"), NodeObserved(unschedulable=False))
    assert book.record.state == "draining"
    assert actions == []


def test_an_uncordon_of_a_node_cordoned_before_is_a_cancel_too() -> None:
    book, actions = drive(at("draining", cordoned_before=True), NodeObserved(unschedulable=False))
    assert book.record.state == "healthy"
    assert "Uncordon" not in summaries(actions)


# --- the node's reboot and its devices -----------------------------------------------------------------


def test_a_reboot_takes_over_a_device_repair_and_repairs_it() -> None:
    book, _ = drive(ready(), detected("ecc/double-bit"))
    book, actions = drive(book, detected(79, device=2))
    assert summaries(actions) == [
        "verdict acted",
        "taints gpu-2=xid:NoExecute",
        "Cordon",
        "TaintNode",
        "mark draining",
        "node healthy→quarantined",
        "device draining→quarantined",
        "node quarantined→draining",
        "CancelDrain gpu-1",
        "EvictPods node",
    ]
    device = record_of(book, "gpu-1")
    assert device is not None
    assert device.awaiting_node
    book, actions = drive(book, DrainSucceeded(device="gpu-1", cycle=1))
    assert actions == [], "the device's own drain outcome is stale once the node took over"
    book, actions = drive(book, DRAINED, REBOOTED, VerificationPassed(cycle=1))
    assert record_of(book, "gpu-1") is None
    assert "device quarantined→healthy" in summaries(actions)
    assert "taints gpu-1=" in summaries(actions)
    assert "taints gpu-2=" in summaries(actions)


def test_a_device_fault_during_a_reboot_waits_for_it() -> None:
    book, actions = drive(at("remediating"), detected("ecc/double-bit", device=3))
    device = record_of(book, "gpu-3")
    assert device is not None
    assert device.state == "quarantined"
    assert device.awaiting_node
    assert "EvictPods gpu-3" not in summaries(actions)


def test_a_device_waiting_for_a_failed_reboot_resumes_its_own_repair_when_a_person_resets_the_node() -> None:
    book, _ = drive(at("remediation-failed"), detected("ecc/double-bit", device=3))
    book, actions = drive(book, PersonReset(by="alice"))
    device = record_of(book, "gpu-3")
    assert device is not None
    assert device.state == "draining"
    assert not device.awaiting_node
    assert summaries(actions)[-1] == "EvictPods gpu-3"


def test_a_reboot_does_not_clear_a_device_fault_that_needs_a_person() -> None:
    book, _ = drive(ready(), detected("row-remap/failed", device=3), detected(79))
    book, _ = drive(book, DRAINED, REBOOTED, VerificationPassed(cycle=1))
    device = record_of(book, "gpu-3")
    assert book.record.state == "healthy"
    assert device is not None
    assert device.state == "quarantined"


def test_a_device_whose_resets_ran_out_is_repaired_by_the_fallback_reboot() -> None:
    book, actions = drive(ready(), detected("ecc/double-bit"), DrainSucceeded(device="gpu-1", cycle=1))
    book, actions = drive(book, RemediationFailed(device="gpu-1", cycle=1), config=ONE_TRY)
    fallback = actions[-1]
    assert isinstance(fallback, EscalateToNode)
    assert fallback.fault.action == "RESTART_BM"
    book, _ = drive(book, FaultDetected(fault=fallback.fault))
    assert book.record.state == "draining"
    book, _ = drive(book, DRAINED, REBOOTED, VerificationPassed(cycle=1))
    assert book.record.state == "healthy"
    assert record_of(book, "gpu-1") is None
