"""The fault catalogue: the defaults against the facts table, classification, merging an operator's file,
and a loader that refuses bad files naming the line."""

from __future__ import annotations

import datetime as dt
import textwrap
from pathlib import Path

import msgspec
import pytest

from libs.events.catalogue.health import RecommendedAction, TaintEffect
from services.health.catalogue import (
    Fault,
    MalformedHealthEvent,
    Scope,
    YamlError,
    classify,
    default_catalogue,
    load_catalogue,
    parse_catalogue,
)
from tests.health_rules.health_rules_support import health_event

# The facts' XID table (facts/gpu-faults.md), row by row, with the taint and scope gpudra adds.
FACTS_ROWS: list[tuple[list[int], RecommendedAction, TaintEffect | None, Scope]] = [
    # 45 is not in the facts' table but in its list of XIDs reference drivers ignore (application errors).
    ([8, 11, 13, 25, 31, 32, 39, 40, 41, 45, 68, 69, 70, 71, 72, 94], "NONE", None, "device"),
    ([14, 37, 38, 43, 44, 63, 66, 67, 92, 93, 121, 137], "NONE", None, "device"),
    ([48], "COMPONENT_RESET", "NoSchedule", "device"),
    ([46, 62, 64, 95, 109, 110, 119, 120, 136, 140, 143, 155, 156, 158], "COMPONENT_RESET", "NoSchedule", "device"),
    ([79, 160], "RESTART_BM", "NoExecute", "node"),
    ([151], "RESTART_VM", "NoSchedule", "node"),
    ([74], "COMPONENT_RESET", "NoSchedule", "device"),
    ([54, 78, 159], "CONTACT_SUPPORT", "NoSchedule", "device"),
]


def xid(code: int | str, *more: str) -> Fault:
    return classify(health_event("xid", (str(code), *more)), default_catalogue())


@pytest.mark.parametrize(("codes", "action", "taint", "scope"), FACTS_ROWS, ids=[str(r[0][0]) for r in FACTS_ROWS])
def test_defaults_follow_the_facts_table(
    codes: list[int], action: RecommendedAction, taint: TaintEffect | None, scope: Scope
) -> None:
    for code in codes:
        got = xid(code)
        assert (got.name, got.action, got.taint, got.scope) == (f"xid-{code}", action, taint, scope)


def test_the_defaults_list_exactly_the_facts_xids() -> None:
    assert sorted(default_catalogue().xids) == sorted(code for row in FACTS_ROWS for code in row[0])


@pytest.mark.parametrize(
    ("check", "code", "expected"),
    [
        ("ecc", "double-bit", ("ecc-double-bit", "COMPONENT_RESET", "NoSchedule", "device")),
        ("ecc", "single-bit", ("ecc-single-bit", "NONE", None, "device")),
        (
            "ecc-counters",
            "volatile-uncorrected",
            ("ecc-counters-volatile-uncorrected", "COMPONENT_RESET", "NoSchedule", "device"),
        ),
        ("ecc-counters", "corrected-rising", ("ecc-counters-corrected-rising", "NONE", "None", "device")),
        ("retired-pages", "pending", ("retired-pages-pending", "COMPONENT_RESET", "NoSchedule", "device")),
        ("row-remap", "pending", ("row-remap-pending", "COMPONENT_RESET", "NoSchedule", "device")),
        ("row-remap", "failed", ("row-remap-failed", "CONTACT_SUPPORT", "NoSchedule", "device")),
        ("gpu-lost", "gpu-lost", ("gpu-lost", "RESTART_BM", "NoExecute", "node")),
        ("nvlink", "link-down", ("nvlink-link-down", "COMPONENT_RESET", "NoSchedule", "device")),
        ("thermal", "slowdown", ("thermal", "NONE", "None", "device")),
        ("thermal", "over-temperature", ("thermal", "NONE", "None", "device")),
        ("pcie", "replays-rising", ("pcie", "NONE", "None", "device")),
        ("monitor", "unmonitored", ("monitor-unmonitored", "NONE", "None", "device")),
        ("recovery-action", "NONE", ("recovery-action-NONE", "NONE", None, "device")),
        ("recovery-action", "GPU_RESET", ("recovery-action-GPU_RESET", "COMPONENT_RESET", "NoSchedule", "device")),
        (
            "recovery-action",
            "DRAIN_AND_RESET",
            ("recovery-action-DRAIN_AND_RESET", "COMPONENT_RESET", "NoSchedule", "device"),
        ),
        ("recovery-action", "NODE_REBOOT", ("recovery-action-NODE_REBOOT", "RESTART_BM", "NoSchedule", "node")),
        ("recovery-action", "DRAIN_P2P", ("recovery-action", "CONTACT_SUPPORT", "NoSchedule", "device")),
    ],
)
def test_default_checks(check: str, code: str, expected: tuple[str, str, str | None, str]) -> None:
    """(name, action, taint, scope) for each check and code the node monitors publish."""
    got = classify(health_event(check, (code,)), default_catalogue())
    assert (got.name, got.action, got.taint, got.scope) == expected
    assert (got.code, got.known) == (code, True)


def test_a_code_the_check_does_not_list_is_unknown() -> None:
    got = classify(health_event("row-remap", ("exploded",)), default_catalogue())
    assert (got.known, got.action) == (False, "NONE")
    assert got.reason == "check 'row-remap' code 'exploded' is not in the fault catalogue: recorded, not acted on"


def test_an_unknown_xid_needs_support() -> None:
    got = xid(999)
    assert (got.action, got.taint, got.fatal) == ("CONTACT_SUPPORT", "NoSchedule", True)
    assert got.reason == "XID 999 is not in the catalogue"


def test_an_unknown_check_is_recorded_and_never_fatal() -> None:
    got = classify(health_event("fan-speed", ("3",)), default_catalogue())
    assert (got.known, got.action, got.fatal, got.code) == (False, "NONE", False, "3")


def test_the_catalogue_overrides_the_monitors_advice() -> None:
    event = msgspec.structs.replace(health_event("xid", ("13",)), fatal=True, recommended_action="RESTART_BM")
    assert classify(event, default_catalogue()).action == "NONE"


def test_several_xids_in_one_event_take_the_worst() -> None:
    assert xid(13, "79", "48").name == "xid-79"


@pytest.mark.parametrize("codes", [(), ("abc",), ("13", "")])
def test_an_xid_event_without_a_number_is_malformed(codes: tuple[str, ...]) -> None:
    with pytest.raises(MalformedHealthEvent, match=r"node dgx-01 about gpu GPU-0001: check 'xid' needs XID numbers"):
        classify(health_event("xid", codes), default_catalogue())


# --- an operator's file ---------------------------------------------------------------------------------


def override(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def test_an_override_replaces_what_it_names_and_keeps_the_rest() -> None:
    catalogue = parse_catalogue(
        override("""
        dedup_window: 90s
        xids:
          - codes: [48, 13]
            action: RESTART_BM
            taint: NoExecute
            scope: node
        checks:
          - check: fan-speed
            action: NONE
            taint: None
          - check: row-remap
            codes: [failed]
            action: REPLACE_VM
            taint: NoExecute
        escalation:
          repeats: []
          fatal_repeats: {count: 3, window: 12h, action: REPLACE_VM}
        """),
        "faults.yaml",
        default_catalogue(),
    )
    assert catalogue.dedup_window == dt.timedelta(seconds=90)
    assert catalogue.xids[48].action == catalogue.xids[13].action == "RESTART_BM"
    assert catalogue.xids[79] == default_catalogue().xids[79]
    assert catalogue.checks["fan-speed", ""].taint == "None"
    assert catalogue.checks["row-remap", "failed"].action == "REPLACE_VM"
    assert catalogue.checks["row-remap", "pending"] == default_catalogue().checks["row-remap", "pending"]
    assert catalogue.checks["gpu-lost", ""] == default_catalogue().checks["gpu-lost", ""]
    assert catalogue.escalation.repeats == ()
    assert catalogue.escalation.fatal_repeats.window == dt.timedelta(hours=12)
    assert catalogue.escalation.node_remediations == default_catalogue().escalation.node_remediations


def test_load_catalogue_reads_the_operators_file(tmp_path: Path) -> None:
    path = tmp_path / "faults.yaml"
    path.write_text("unknown_xid:\n  action: NONE\n")
    assert load_catalogue(path).unknown_xid.action == "NONE"
    assert load_catalogue() is default_catalogue()
    path.write_text("")
    assert load_catalogue(path) == default_catalogue()


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(YamlError, match=r"faults.yaml: cannot read the fault catalogue: No such file"):
        load_catalogue(tmp_path / "faults.yaml")


def test_a_catalogue_without_defaults_must_be_complete() -> None:
    with pytest.raises(YamlError, match=r"^defaults.yaml: a catalogue without defaults must set dedup_window$"):
        parse_catalogue("xids: []\n", "defaults.yaml")


BAD_FILES = [
    (
        "unknown action",
        """
        # my overrides
        version: 1
        xids:
          - codes: [48]
            action: REBOOT_NOW
        """,
        "faults.yaml line 5: unknown action 'REBOOT_NOW' (one of: COMPONENT_RESET, CONTACT_SUPPORT, CUSTOM, "
        "NONE, REPLACE_VM, RESTART_BM, RESTART_VM, RUN_DCGMEUD, RUN_FIELDDIAG, UNKNOWN)",
    ),
    (
        "unknown key",
        """
        checks:
          - check: thermal
            action: NONE
            tiant: None
        """,
        "faults.yaml line 4: unknown key 'tiant' (expected one of: action, taint, scope, description, check, codes)",
    ),
    (
        "unknown top-level key",
        "xid: []\n",
        "faults.yaml line 1: unknown key 'xid' (expected one of: version, "
        "dedup_window, unknown_xid, xids, checks, escalation)",
    ),
    (
        "duplicate XID",
        """
        xids:
          - codes: [48, 64]
            action: COMPONENT_RESET
            taint: NoSchedule
          - codes:
              - 13
              - 64
            action: NONE
        """,
        "faults.yaml line 7: XID 64 is listed twice (first at line 2)",
    ),
    (
        "duplicate key",
        """
        unknown_xid:
          action: NONE
          action: CONTACT_SUPPORT
        """,
        "faults.yaml line 3: duplicate key 'action' (first at line 2)",
    ),
    (
        "unreadable window",
        "dedup_window: 3 minutes\n",
        "faults.yaml line 1: dedup_window: '3 minutes' is not a window (write 90s, 3m, 24h, 7d or a number of seconds)",
    ),
    ("zero window", "dedup_window: 0s\n", "faults.yaml line 1: dedup_window: window '0s' must be longer than zero"),
    ("negative window", "dedup_window: -5\n", "faults.yaml line 1: dedup_window: window -5 must be longer than zero"),
    (
        "bad escalation window",
        """
        escalation:
          node_remediations:
            count: 5
            window: 7w
            action: CONTACT_SUPPORT
        """,
        "faults.yaml line 4: window: '7w' is not a window (write 90s, 3m, 24h, 7d or a number of seconds)",
    ),
    ("wrong type", "xids:\n  - codes: [x]\n    action: NONE\n", "faults.yaml line 2: codes: expected `int`, got `str`"),
    ("missing key", "unknown_xid:\n  taint: NoSchedule\n", "faults.yaml line 2: missing key 'action'"),
    ("not a mapping", "- 1\n", "faults.yaml line 1: the file: expected `object`, got `array`"),
    ("unknown version", "version: 2\n", "faults.yaml line 1: unknown version 2 (one of: 1)"),
    ("YAML syntax", "xids: [\n  - 1\n", "faults.yaml line 2: expected the node content, but found '-'"),
    (
        "reboot on a device",
        "xids:\n  - codes: [79]\n    taint: NoExecute\n    action: RESTART_BM\n",
        "faults.yaml line 4: RESTART_BM restarts the node: it needs scope: node",
    ),
    (
        "reset of a node",
        "xids:\n  - codes: [48]\n    action: COMPONENT_RESET\n    scope: node\n",
        "faults.yaml line 3: COMPONENT_RESET resets one GPU: it needs scope: device",
    ),
    (
        "informational fault that blocks",
        "checks:\n  - check: thermal\n    action: NONE\n    taint: NoExecute\n",
        "faults.yaml line 4: action NONE only records the fault: taint must be None or left out",
    ),
    (
        "fatal device fault that blocks nothing",
        "checks:\n  - check: thermal\n    action: CONTACT_SUPPORT\n",
        "faults.yaml line 2: CONTACT_SUPPORT on one device needs taint NoSchedule or NoExecute to keep work off it",
    ),
    ("empty codes", "xids:\n  - codes: []\n    action: NONE\n", "faults.yaml line 2: codes must list at least one XID"),
    ("negative XID", "xids:\n  - codes: [-1]\n    action: NONE\n", "faults.yaml line 2: XID -1 is negative"),
    (
        "bad check name",
        "checks:\n  - check: Fan_Speed\n    action: NONE\n",
        "faults.yaml line 2: check 'Fan_Speed' must be lowercase letters, digits and '-' (a taint key)",
    ),
    (
        "reserved check",
        "checks:\n  - check: xid\n    action: NONE\n",
        "faults.yaml line 2: check 'xid' is reserved: list XIDs under xids",
    ),
    (
        "duplicate check",
        "checks:\n  - check: thermal\n    action: NONE\n  - check: thermal\n    action: NONE\n",
        "faults.yaml line 4: check 'thermal' (without codes) is listed twice (first at line 2)",
    ),
    (
        "duplicate check code",
        """
        checks:
          - check: row-remap
            codes: [failed, pending]
            action: CONTACT_SUPPORT
            taint: NoSchedule
          - check: row-remap
            codes:
              - failed
            action: NONE
        """,
        "faults.yaml line 8: check 'row-remap' code 'failed' is listed twice (first at line 3)",
    ),
    (
        "bad code",
        "checks:\n  - check: thermal\n    codes: ['too hot']\n    action: NONE\n",
        "faults.yaml line 3: code 'too hot' must be a label value (a taint value)",
    ),
    (
        "a repeat that needs no repeat",
        "escalation:\n  repeats:\n    - {xids: [13], count: 1, window: 1h, action: RUN_DCGMEUD}\n",
        "faults.yaml line 3: count must be at least 2, not 1",
    ),
    (
        "an XID in two repeat rules",
        """
        escalation:
          repeats:
            - {xids: [13], count: 2, window: 1h, action: RUN_DCGMEUD}
            - {xids: [31, 13], count: 3, window: 1h, action: CONTACT_SUPPORT}
        """,
        "faults.yaml line 4: XID 13 is in two repeat rules (first at line 3)",
    ),
    (
        "an escalation to an automatic action",
        "escalation:\n  fatal_repeats:\n    count: 5\n    window: 24h\n    action: RESTART_BM\n",
        "faults.yaml line 5: an escalation hands the fault to a person: RESTART_BM is automatic (use "
        "CONTACT_SUPPORT, RUN_DCGMEUD, RUN_FIELDDIAG, REPLACE_VM, CUSTOM, or NONE to turn the rule off)",
    ),
]


@pytest.mark.parametrize(("text", "message"), [r[1:] for r in BAD_FILES], ids=[r[0] for r in BAD_FILES])
def test_the_loader_refuses_a_bad_file_naming_the_line(text: str, message: str) -> None:
    with pytest.raises(YamlError) as refused:
        parse_catalogue(override(text), "faults.yaml", default_catalogue())
    assert str(refused.value) == message


def test_the_override_example_in_the_docs_loads() -> None:
    doc = (Path(__file__).parents[2] / "docs" / "health.md").read_text()
    example = doc.split("Example override (`faults.yaml`):\n\n```yaml\n", 1)[1].split("```", 1)[0]
    catalogue = parse_catalogue(example, "faults.yaml", default_catalogue())
    assert catalogue.xids[48].action == "RESTART_BM"
    assert catalogue.checks["fan-speed", ""].taint == "None"
