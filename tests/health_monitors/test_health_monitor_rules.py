"""The monitors' pure parts: counter rules and transitions, the watchdog's judgement, ids, opinions, the ledger."""

from __future__ import annotations

import datetime as dt
import stat
from pathlib import Path

import msgspec
import pytest

from libs.bus import CommandError
from libs.devices.events import RecoveryAction
from libs.devices.model import HealthCounters
from libs.events.catalogue.health import EntityRef
from services.health.monitors import MonitorSettings, opinions
from services.health.monitors.conditions import Condition, event_id, health_event
from services.health.monitors.counter_rules import Thresholds, assess, compare
from services.health.monitors.gpu_reset import gpu_minor
from services.health.monitors.ledger import FILE_NAME, ActiveCondition, ConditionLedger
from services.health.monitors.watchdog import monitor_status
from services.health.settings import Settings as HealthSettings

GPU = EntityRef(kind="gpu", id="GPU-0000", device="gpu-3")
TH = Thresholds(ecc_uncorrected=1, ecc_corrected_rise=10, temperature_c=90, pcie_replay_rise=5)
NODE = "node-a"


def counters(**fields: object) -> HealthCounters:
    return msgspec.convert({"minor": 3, "nvlink_up": [True, True], **fields}, HealthCounters)


def codes(conditions: list[Condition]) -> set[tuple[str, str]]:
    return {(c.check, c.code) for c in conditions}


def test_healthy_counters_hold_no_condition() -> None:
    assert assess(counters(), counters(), GPU, set(), TH) == []


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"ecc_volatile_uncorrected": 1}, ("ecc-counters", "volatile-uncorrected")),
        ({"retired_pages_pending": True}, ("retired-pages", "pending")),
        ({"row_remap_pending": True}, ("row-remap", "pending")),
        ({"row_remap_failed": True}, ("row-remap", "failed")),
        ({"thermal_slowdown": True}, ("thermal", "slowdown")),
        ({"temperature_c": 90}, ("thermal", "over-temperature")),
        ({"nvlink_up": [True, False]}, ("nvlink", "link-down")),
    ],
)
def test_each_level_rule_holds_from_the_first_poll(fields: dict[str, object], expected: tuple[str, str]) -> None:
    assert codes(assess(None, counters(**fields), GPU, set(), TH)) == {expected}


def test_level_rules_respect_their_thresholds() -> None:
    assert assess(None, counters(temperature_c=89), GPU, set(), TH) == []
    strict = Thresholds(ecc_uncorrected=5)
    assert assess(None, counters(ecc_volatile_uncorrected=4), GPU, set(), strict) == []


def test_a_zero_threshold_turns_its_rule_off() -> None:
    off = Thresholds(ecc_uncorrected=0, ecc_corrected_rise=0, temperature_c=0, pcie_replay_rise=0)
    hot = counters(ecc_volatile_uncorrected=9, ecc_volatile_corrected=900, temperature_c=120, pcie_replays=900)
    assert assess(counters(), hot, GPU, set(), off) == []


def test_the_uncorrected_count_is_the_detail_so_a_rise_is_a_new_occurrence() -> None:
    [before] = assess(None, counters(ecc_volatile_uncorrected=1), GPU, set(), TH)
    [after] = assess(None, counters(ecc_volatile_uncorrected=4), GPU, set(), TH)
    assert (before.key, before.detail, after.detail) == (after.key, "1", "4")
    assert compare({before.key: before.detail}, [after]).raised == (after,)


def test_a_down_link_is_an_entity_of_its_own_on_the_same_device() -> None:
    [link] = assess(None, counters(nvlink_up=[True, False]), GPU, set(), TH)
    assert link.entity == EntityRef(kind="nvlink", id="GPU-0000/nvlink-1", device="gpu-3")
    assert (link.component, link.minor, link.fatal) == ("nvlink", 3, True)


def test_a_rate_rule_raises_on_a_rise_keeps_while_rising_and_clears_when_quiet() -> None:
    key = "pcie|GPU-0000|replays-rising"
    assert assess(counters(pcie_replays=0), counters(pcie_replays=4), GPU, set(), TH) == []
    [raised] = assess(counters(pcie_replays=0), counters(pcie_replays=5), GPU, set(), TH)
    assert raised.key == key
    still = assess(counters(pcie_replays=5), counters(pcie_replays=6), GPU, {key}, TH)
    assert [c.key for c in still] == [key]
    assert assess(counters(pcie_replays=6), counters(pcie_replays=6), GPU, {key}, TH) == []


def test_a_rate_rule_without_a_previous_reading_keeps_what_it_was() -> None:
    key = "ecc-counters|GPU-0000|corrected-rising"
    assert assess(None, counters(ecc_volatile_corrected=500), GPU, set(), TH) == []
    assert codes(assess(None, counters(ecc_volatile_corrected=500), GPU, {key}, TH)) == {
        ("ecc-counters", "corrected-rising")
    }


def test_a_counter_that_fell_after_a_reset_is_quiet_not_negative() -> None:
    key = "ecc-counters|GPU-0000|corrected-rising"
    assert assess(counters(ecc_volatile_corrected=500), counters(), GPU, {key}, TH) == []


def test_compare_raises_the_new_and_changed_and_clears_the_gone() -> None:
    conditions = assess(None, counters(row_remap_pending=True, ecc_volatile_uncorrected=2), GPU, set(), TH)
    remap, ecc = sorted(conditions, key=lambda c: c.check, reverse=True)
    transitions = compare({remap.key: "", ecc.key: "1", "thermal|GPU-0000|slowdown": ""}, conditions)
    assert transitions.raised == (ecc,)
    assert transitions.cleared == ("thermal|GPU-0000|slowdown",)


def test_compare_of_unchanged_conditions_is_empty() -> None:
    conditions = assess(None, counters(row_remap_failed=True), GPU, set(), TH)
    transitions = compare({c.key: c.detail for c in conditions}, conditions)
    assert (transitions.raised, transitions.cleared) == ((), ())


@pytest.mark.parametrize(
    ("last_beat", "crashed_at", "deadline", "expected"),
    [
        (None, None, 1.0, None),  # started 0.5 s ago, not answered yet: not known
        (None, None, 0.2, False),  # never answered within the deadline
        (9.8, None, 1.0, True),
        (8.0, None, 1.0, False),  # answered, then stopped answering
        (9.9, 9.5, 1.0, True),  # crashed, restarted, answered since
        (9.0, 9.5, 1.0, False),  # crashed after its last answer
        (None, None, None, None),  # an event stream before it subscribed
        (1.0, None, None, True),  # an event stream is never late
    ],
)
def test_monitor_status(
    last_beat: float | None, crashed_at: float | None, deadline: float | None, expected: bool | None
) -> None:
    status, reason = monitor_status(
        10.0, started_at=9.5, last_beat=last_beat, crashed_at=crashed_at, crash="boom", deadline=deadline
    )
    assert status is expected
    assert bool(reason) is (expected is False)


def test_event_ids_are_stable_per_occurrence_and_differ_otherwise() -> None:
    [condition] = assess(None, counters(row_remap_failed=True), GPU, set(), TH)
    first = event_id(NODE, condition, healthy=False, occurrence="t1")
    assert first == event_id(NODE, condition, healthy=False, occurrence="t1")
    assert len(first) == 32
    others = {
        event_id(NODE, condition, healthy=True, occurrence="t1"),
        event_id(NODE, condition, healthy=False, occurrence="t2"),
        event_id("node-b", condition, healthy=False, occurrence="t1"),
    }
    assert first not in others
    assert len(others) == 3


def test_a_healthy_event_is_never_fatal_and_recommends_nothing() -> None:
    [condition] = assess(None, counters(row_remap_failed=True), GPU, set(), TH)
    at = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    fault = health_event(NODE, condition, healthy=False, detected_at=at)
    cleared = health_event(NODE, condition, healthy=True, detected_at=at)
    assert (fault.fatal, fault.recommended_action, fault.error_codes) == (True, "CONTACT_SUPPORT", ["failed"])
    assert (cleared.fatal, cleared.healthy, cleared.recommended_action) == (False, True, "NONE")
    assert cleared.message.startswith("cleared: ")


@pytest.mark.parametrize(
    ("xid", "action"),
    [
        (48, "COMPONENT_RESET"),
        (13, "NONE"),
        (43, "NONE"),
        (74, "COMPONENT_RESET"),
        (79, "RESTART_BM"),
        (151, "RESTART_VM"),
        (999, "CONTACT_SUPPORT"),
    ],
)
def test_xid_first_opinions_follow_the_facts_table(xid: int, action: str) -> None:
    assert opinions.xid_action(xid) == action


def test_recovery_actions_map_to_the_vocabulary_and_unknown_values_survive() -> None:
    assert opinions.recovery_action(RecoveryAction.NODE_REBOOT) == "RESTART_BM"
    assert opinions.recovery_action(RecoveryAction.DRAIN_P2P) == "CONTACT_SUPPORT"
    assert opinions.recovery_action_name(42) == "ACTION_42"


def test_gpu_names_parse_and_others_are_refused_with_what_to_send() -> None:
    assert gpu_minor(NODE, "gpu-12") == 12
    with pytest.raises(CommandError) as mig:
        gpu_minor(NODE, "gpu-0-mig-1g10gb-19-0")
    assert (mig.value.code, "gpu-0 " in mig.value.message) == (400, True)
    with pytest.raises(CommandError) as other:
        gpu_minor(NODE, "3")
    assert other.value.code == 404


async def test_the_ledger_survives_a_reload_and_is_private(tmp_path: Path) -> None:
    [condition] = assess(None, counters(row_remap_failed=True), GPU, set(), TH)
    ledger = await ConditionLedger.load(NODE, tmp_path)
    await ledger.put(ActiveCondition(condition=condition, occurrence="t1"))
    reloaded = await ConditionLedger.load(NODE, tmp_path)
    assert reloaded.get(condition.key) == ActiveCondition(condition=condition, occurrence="t1")
    assert stat.S_IMODE((tmp_path / FILE_NAME).stat().st_mode) == 0o600
    await reloaded.remove(condition.key)
    assert (await ConditionLedger.load(NODE, tmp_path)).entries() == []


async def test_an_unreadable_ledger_is_set_aside_and_another_nodes_ignored(tmp_path: Path) -> None:
    (tmp_path / FILE_NAME).write_bytes(b"{not json")
    assert (await ConditionLedger.load(NODE, tmp_path)).entries() == []
    assert (tmp_path / FILE_NAME).with_suffix(".unreadable").exists()
    [condition] = assess(None, counters(row_remap_failed=True), GPU, set(), TH)
    await (await ConditionLedger.load("node-b", tmp_path)).put(ActiveCondition(condition=condition, occurrence="t"))
    assert (await ConditionLedger.load(NODE, tmp_path)).entries() == []


async def test_a_ledger_that_cannot_be_written_keeps_working_in_memory(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("")
    [condition] = assess(None, counters(row_remap_failed=True), GPU, set(), TH)
    ledger = await ConditionLedger.load(NODE, blocked)
    await ledger.put(ActiveCondition(condition=condition, occurrence="t1"))
    assert ledger.get(condition.key) is not None
    assert "cannot save the monitor ledger" in caplog.text


def test_monitor_settings_come_from_the_service_settings_fields() -> None:
    service = HealthSettings(
        monitor_poll_seconds=2.0,
        monitor_deadline_seconds=8.0,
        monitor_restart_seconds=0.5,
        monitor_inventory_seconds=30.0,
        ecc_uncorrected_threshold=2,
        ecc_corrected_threshold=50,
        temperature_threshold_c=85,
        pcie_replay_threshold=0,
    )
    settings = MonitorSettings.from_settings(service)
    assert (settings.poll_seconds, settings.deadline_seconds, settings.restart_seconds) == (2.0, 8.0, 0.5)
    assert settings.inventory_seconds == 30.0
    assert settings.thresholds == Thresholds(
        ecc_uncorrected=2, ecc_corrected_rise=50, temperature_c=85, pcie_replay_rise=0
    )
    assert settings.tick_seconds == 1.0
