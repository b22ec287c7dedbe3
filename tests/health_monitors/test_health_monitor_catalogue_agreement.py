"""Every condition a node monitor can publish is known to the controller's default catalogue, with the same action.

The monitor's recommended action is a first opinion and the catalogue decides; this keeps the two from
drifting apart silently (a renamed check would otherwise be "recorded, not acted on" by the controller).
"""

from __future__ import annotations

import datetime as dt

import pytest

from libs.devices.events import EccEvent, RecoveryAction, RecoveryActionEvent, XidEvent
from libs.devices.model import HealthCounters
from libs.events.catalogue.health import EntityRef
from services.health.catalogue import classify, default_catalogue
from services.health.monitors import opinions
from services.health.monitors.conditions import Condition, health_event
from services.health.monitors.counter_rules import Thresholds, assess
from services.health.monitors.event_stream import ecc_condition, gpu_lost_condition, recovery_condition, xid_condition
from services.health.monitors.pollers import passthrough_condition
from services.health.monitors.watchdog import unmonitored_condition

GPU = EntityRef(kind="gpu", id="GPU-0001", device="gpu-1")
EVERYTHING_WRONG = HealthCounters(
    minor=1,
    ecc_volatile_uncorrected=1,
    ecc_volatile_corrected=500,
    retired_pages_pending=True,
    row_remap_pending=True,
    row_remap_failed=True,
    temperature_c=99,
    thermal_slowdown=True,
    nvlink_up=(False,),
    pcie_replays=500,
)


def every_condition() -> list[Condition]:
    polled = assess(HealthCounters(minor=1), EVERYTHING_WRONG, GPU, set(), Thresholds())
    xids = [xid_condition(XidEvent(minor=1, uuid=GPU.id, xid=xid), GPU) for xid in (*opinions.XID_ACTIONS, 999)]
    ecc = [ecc_condition(EccEvent(minor=1, uuid=GPU.id, double_bit=double), GPU) for double in (True, False)]
    recovery = [
        recovery_condition(RecoveryActionEvent(minor=1, uuid=GPU.id, action=action), GPU)
        for action in (*RecoveryAction, 99)
        if action != RecoveryAction.NONE
    ]
    unmonitored = unmonitored_condition(GPU, ["counters/gpu-1"], 1)
    with_vm = passthrough_condition(1, GPU)
    return [*polled, *xids, *ecc, *recovery, gpu_lost_condition(1, GPU, "test"), unmonitored, with_vm]


def test_the_rules_cover_every_polled_check() -> None:
    assert {c.check for c in every_condition()} >= {
        "ecc-counters",
        "retired-pages",
        "row-remap",
        "thermal",
        "nvlink",
        "pcie",
        "xid",
        "ecc",
        "recovery-action",
        "gpu-lost",
        "monitor",
        "passthrough",
    }


@pytest.mark.parametrize("condition", every_condition(), ids=lambda c: f"{c.check}-{c.error_codes or c.code}")
def test_the_default_catalogue_knows_the_condition_and_agrees(condition: Condition) -> None:
    event = health_event("node-a", condition, healthy=False, detected_at=dt.datetime.now(dt.UTC))
    fault = classify(event, default_catalogue())
    assert fault.known, fault.reason
    assert fault.action == condition.action, fault.reason
