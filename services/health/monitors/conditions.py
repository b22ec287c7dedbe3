"""What a monitor observes (a ``Condition``) and how it travels (a ``HealthEvent`` with a derived event id).

A condition is identified by its check, entity and code: the controller pairs a fault with the healthy event
that clears it by exactly these. The event id is derived, not random, from (node, check, entity, code, state,
occurrence): a monitor that restarts and reports the same active condition again publishes the same id, and
JetStream drops the duplicate within its de-duplication window.
"""

from __future__ import annotations

import datetime as dt
import hashlib

import msgspec

from libs.events.catalogue.health import Component, EntityRef, HealthEvent, RecommendedAction

# The remediation controller's fault catalogue (services/health/catalogue/defaults.yaml) is keyed by these
# (check, code) pairs, the code travelling as the event's first error code: rename one only with it.

# The event-stream monitor's (one-off reports, cleared by a successful GPU reset).
CHECK_XID = "xid"
CHECK_ECC = "ecc"
CHECK_RECOVERY = "recovery-action"
# Shared: raised by the event stream or a failed poll, cleared by the next poll that reads the GPU.
CHECK_GPU_LOST = "gpu-lost"
# The counter pollers' (raised and cleared by what the counters say).
CHECK_ECC_COUNTERS = "ecc-counters"
CHECK_RETIRED_PAGES = "retired-pages"
CHECK_ROW_REMAP = "row-remap"
CHECK_THERMAL = "thermal"
CHECK_NVLINK = "nvlink"
CHECK_PCIE = "pcie"
# The watchdog's, for the devices of a monitor that died or stopped answering (code "unmonitored").
CHECK_MONITOR = "monitor"
# The pollers' too: the GPU is with a VM (bound to vfio-pci), so neither the driver nor NVML watches it (code "vm").
CHECK_PASSTHROUGH = "passthrough"

RESET_CLEARS = frozenset({CHECK_XID, CHECK_ECC, CHECK_RECOVERY})
"""What a successful GPU reset clears. Not GPU lost: the poller clears that once it reads the GPU again, so a
GPU that a reset did not bring back is never reported healthy."""
POLLER_CHECKS = frozenset(
    {
        CHECK_ECC_COUNTERS,
        CHECK_RETIRED_PAGES,
        CHECK_ROW_REMAP,
        CHECK_THERMAL,
        CHECK_NVLINK,
        CHECK_PCIE,
        CHECK_GPU_LOST,
        CHECK_PASSTHROUGH,
    }
)


class Condition(msgspec.Struct, frozen=True, kw_only=True):
    """One fault a monitor sees on one entity; ``detail`` changing while active makes a new occurrence."""

    check: str
    component: Component
    entity: EntityRef
    code: str
    """Identifies the condition within its check (``48``, ``pending``, ``link-down``)."""
    minor: int
    """The GPU the condition belongs to (-1: the node): a reset of that GPU clears its event conditions."""
    action: RecommendedAction = "NONE"
    message: str = ""
    error_codes: tuple[str, ...] = ()
    """What the event reports as error codes; the code alone when empty."""
    detail: str = ""
    """E.g. an error count: when it changes while the condition is active, a new event says so."""

    @property
    def key(self) -> str:
        return condition_key(self.check, self.entity.id, self.code)

    @property
    def fatal(self) -> bool:
        """NVSentinel's rule: a fault is fatal when its recommended action is not NONE."""
        return self.action != "NONE"


def condition_key(check: str, entity_id: str, code: str) -> str:
    return f"{check}|{entity_id}|{code}"


def event_id(node: str, condition: Condition, *, healthy: bool, occurrence: str) -> str:
    """Stable across restarts for the same occurrence, different for a new one (32 hex characters)."""
    parts = (node, condition.check, condition.entity.id, condition.code, "healthy" if healthy else "fault", occurrence)
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


def health_event(node: str, condition: Condition, *, healthy: bool, detected_at: dt.datetime) -> HealthEvent:
    """The fault (or, with ``healthy``, its clearing) as the catalogue's event."""
    return HealthEvent(
        node=node,
        check=condition.check,
        component=condition.component,
        entity=condition.entity,
        error_codes=list(condition.error_codes or (condition.code,)),
        fatal=False if healthy else condition.fatal,
        healthy=healthy,
        recommended_action="NONE" if healthy else condition.action,
        message=f"cleared: {condition.message}" if healthy else condition.message,
        detected_at=detected_at,
    )


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
