"""Every escalation rule, as a table of histories: what came before on the node, then one fault."""

from __future__ import annotations

import datetime as dt

import pytest

from libs.events.catalogue.health import RecommendedAction
from services.health.catalogue import Fault, default_catalogue, parse_catalogue
from services.health.remediation import History, escalate, record_remediation
from tests.health_rules.health_rules_support import NOW, fault

RULES = default_catalogue().escalation
HOUR = dt.timedelta(hours=1)


def seen(*earlier: tuple[int | str, int, dt.timedelta], remediations: int = 0) -> History:
    """A history of (XID or check, GPU, how long ago) faults and ``remediations`` an hour ago each."""
    history = History()
    for what, device, ago in earlier:
        _, history = escalate(fault(what, device), history, NOW - ago, RULES)
    for _ in range(remediations):
        history = record_remediation(history, NOW - HOUR)
    return history


TABLE: list[tuple[str, History, Fault, RecommendedAction, bool, str]] = [
    ("XID 13 once: application", seen(), fault(13), "NONE", False, "XID 13: application-level"),
    (
        "XID 13 twice on one GPU: diagnostics",
        seen((13, 1, HOUR)),
        fault(13),
        "RUN_DCGMEUD",
        True,
        "XID 13 2 times on gpu-1",
    ),
    ("XID 31 twice on one GPU", seen((31, 1, 2 * HOUR)), fault(31), "RUN_DCGMEUD", True, "XID 31 2 times"),
    ("XID 13 then 31: not the same XID", seen((31, 1, HOUR)), fault(13), "NONE", False, "XID 13: application"),
    ("XID 13 repeat outside 24 h", seen((13, 1, 25 * HOUR)), fault(13), "NONE", False, "XID 13: application"),
    (
        "XID 13 repeated, also on another GPU: the application",
        seen((13, 2, HOUR), (13, 1, HOUR)),
        fault(13),
        "NONE",
        False,
        "XID 13 also on gpu-2: likely the application, not escalated",
    ),
    ("XID 74 twice: support", seen((74, 1, HOUR)), fault(74), "CONTACT_SUPPORT", True, "XID 74 2 times"),
    (
        "fatal XID the 5th time in 24 h: support",
        seen((48, 1, HOUR), (64, 1, 2 * HOUR), (48, 1, 3 * HOUR), (95, 1, 4 * HOUR)),
        fault(48),
        "CONTACT_SUPPORT",
        True,
        "5 fatal XIDs on gpu-1 within 1 day",
    ),
    (
        "fatal XID the 5th time, one of them 25 h ago",
        seen((48, 1, HOUR), (64, 1, 2 * HOUR), (48, 1, 3 * HOUR), (95, 1, 25 * HOUR)),
        fault(48),
        "COMPONENT_RESET",
        False,
        "XID 48: double-bit",
    ),
    (
        "fatal XIDs spread over GPUs do not add up",
        seen((48, 2, HOUR), (48, 3, HOUR), (48, 4, HOUR), (48, 0, HOUR)),
        fault(48),
        "COMPONENT_RESET",
        False,
        "XID 48: double-bit",
    ),
    (
        "the spread rule never downgrades a fatal fault",
        seen((48, 2, HOUR)),
        fault(48),
        "COMPONENT_RESET",
        False,
        "XID 48",
    ),
    (
        "5 remediations in a week: support for the node",
        seen(remediations=5),
        fault("ecc/double-bit"),
        "CONTACT_SUPPORT",
        True,
        "5 remediations on this node within 7 days",
    ),
    (
        "4 remediations: not yet",
        seen(remediations=4),
        fault("ecc/double-bit"),
        "COMPONENT_RESET",
        False,
        "ecc-double-bit",
    ),
    ("remediations do not escalate informational faults", seen(remediations=9), fault(13), "NONE", False, "XID 13"),
]


@pytest.mark.parametrize(
    ("history", "incoming", "action", "escalated", "reason"), [r[1:] for r in TABLE], ids=[r[0] for r in TABLE]
)
def test_escalation_rule(
    history: History, incoming: Fault, action: RecommendedAction, escalated: bool, reason: str
) -> None:
    result, _ = escalate(incoming, history, NOW, RULES)
    assert (result.action, result.escalated) == (action, escalated)
    assert reason in result.reason


def test_five_remediations_make_a_sticky_node_fault() -> None:
    result, _ = escalate(fault("ecc/double-bit"), seen(remediations=5), NOW, RULES)
    assert (result.scope, result.sticky, result.taint) == ("node", True, "NoSchedule")


def test_an_escalated_repeat_taints_the_gpu() -> None:
    result, _ = escalate(fault(13), seen((13, 1, HOUR)), NOW, RULES)
    assert result.taint == "NoSchedule"


def test_history_is_pruned_to_the_longest_window() -> None:
    old = seen((13, 1, 30 * HOUR), (48, 2, 2 * HOUR), remediations=1)
    old = record_remediation(old, NOW - dt.timedelta(days=8))
    _, history = escalate(fault(13, device=3), old, NOW, RULES)
    assert [(o.xid, o.device) for o in history.xids] == [(48, "gpu-2"), (13, "gpu-3")]
    assert history.remediations == (NOW - HOUR,)


def test_non_xid_faults_are_not_recorded_as_xids() -> None:
    _, history = escalate(fault("gpu-lost/gpu-lost"), History(), NOW, RULES)
    assert history.xids == ()


def test_a_rule_set_to_none_is_off() -> None:
    rules = parse_catalogue(
        "escalation:\n  fatal_repeats: {count: 1, window: 1h, action: NONE}\n"
        "  node_remediations: {count: 1, window: 1h, action: NONE}\n  repeats:\n"
        "    - {xids: [13], count: 2, window: 1h, action: NONE}\n",
        "faults.yaml",
        default_catalogue(),
    ).escalation
    history = record_remediation(History(), NOW)
    assert escalate(fault(48), history, NOW, rules)[0].action == "COMPONENT_RESET"
    _, history = escalate(fault(13), History(), NOW, rules)
    assert escalate(fault(13), history, NOW, rules)[0].action == "NONE"
