"""Pure rules from a GPU's counter readings to the conditions that hold, and from those to what changed.

Kept apart from polling so each rule is tested with two structs and no clock. Two kinds of rule:

- level rules hold while a counter says so (uncorrected volatile ECC errors, pages waiting to be retired,
  rows waiting to be remapped, a failed remap, thermal slowdown, a hot GPU, an NVLink link down);
- rate rules hold while a counter rises: a rise of at least the threshold between two polls raises them,
  any further rise keeps them, and the first poll without a rise clears them (corrected ECC errors and PCIe
  replays grow slowly on healthy GPUs, so their level means nothing).

Without a previous reading (the first poll) a rate rule cannot be judged and keeps what it was.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence, Set

import msgspec

from libs.devices.model import HealthCounters
from libs.events.catalogue.health import Component, EntityRef, RecommendedAction
from services.health.monitors.conditions import (
    CHECK_ECC_COUNTERS,
    CHECK_NVLINK,
    CHECK_PCIE,
    CHECK_RETIRED_PAGES,
    CHECK_ROW_REMAP,
    CHECK_THERMAL,
    Condition,
    condition_key,
)


class Thresholds(msgspec.Struct, frozen=True, kw_only=True):
    """When a counter becomes a condition; every value is a setting of the health service, and 0 turns its rule
    off (a fleet whose GPUs run hot by design, a PCIe riser known to replay)."""

    ecc_uncorrected: int = 1
    """Volatile uncorrected ECC errors (since the last reset) that make a fault."""
    ecc_corrected_rise: int = 100
    """Corrected ECC errors between two polls that start an "errors rising" condition."""
    temperature_c: int = 90
    """GPU temperature (Celsius) at or above which the GPU is reported hot."""
    pcie_replay_rise: int = 100
    """PCIe replays between two polls that start a "replays rising" condition."""


class Reading(msgspec.Struct, frozen=True, kw_only=True):
    """Everything one rule looks at: two readings, the GPU, what was active before, the thresholds."""

    previous: HealthCounters | None
    current: HealthCounters
    gpu: EntityRef
    was_active: frozenset[str]
    thresholds: Thresholds

    def condition(
        self,
        check: str,
        code: str,
        *,
        message: str,
        component: Component = "memory",
        action: RecommendedAction = "NONE",
        detail: str = "",
        entity: EntityRef | None = None,
    ) -> Condition:
        return Condition(
            check=check,
            code=code,
            component=component,
            entity=entity or self.gpu,
            minor=self.current.minor,
            action=action,
            detail=detail,
            message=message,
        )

    def rise(self, field: str) -> int | None:
        """How much a counter grew since the previous poll; None on the first poll; 0 after a reset."""
        if self.previous is None:
            return None
        return max(int(getattr(self.current, field)) - int(getattr(self.previous, field)), 0)

    def rising(self, key: str, field: str, threshold: int) -> bool:
        if threshold <= 0:
            return False
        rise = self.rise(field)
        if rise is None:
            return key in self.was_active
        return rise >= threshold or (key in self.was_active and rise > 0)


class Transitions(msgspec.Struct, frozen=True, kw_only=True):
    raised: tuple[Condition, ...] = ()
    """New conditions, and active ones whose detail changed (a new occurrence)."""
    cleared: tuple[str, ...] = ()
    """Keys of conditions that were active and no longer hold."""


def assess(
    previous: HealthCounters | None,
    current: HealthCounters,
    gpu: EntityRef,
    was_active: Set[str],
    thresholds: Thresholds,
) -> list[Condition]:
    """Every condition that holds on the GPU now, by the rules above."""
    reading = Reading(
        previous=previous, current=current, gpu=gpu, was_active=frozenset(was_active), thresholds=thresholds
    )
    return [condition for rule in RULES for condition in rule(reading)]


def compare(previous: Mapping[str, str], current: Sequence[Condition]) -> Transitions:
    """``previous`` maps each active condition's key to its detail; a changed detail is raised again."""
    keys = {condition.key for condition in current}
    return Transitions(
        raised=tuple(c for c in current if previous.get(c.key) != c.detail),
        cleared=tuple(key for key in previous if key not in keys),
    )


def _ecc_uncorrected(r: Reading) -> Iterable[Condition]:
    count = r.current.ecc_volatile_uncorrected
    if 0 < r.thresholds.ecc_uncorrected <= count:
        yield r.condition(
            CHECK_ECC_COUNTERS,
            "volatile-uncorrected",
            action="COMPONENT_RESET",
            detail=str(count),
            message=f"{r.gpu.device}: {count} uncorrected ECC error(s) since the last reset",
        )


def _ecc_corrected(r: Reading) -> Iterable[Condition]:
    key = condition_key(CHECK_ECC_COUNTERS, r.gpu.id, "corrected-rising")
    if r.rising(key, "ecc_volatile_corrected", r.thresholds.ecc_corrected_rise):
        yield r.condition(
            CHECK_ECC_COUNTERS,
            "corrected-rising",
            message=f"{r.gpu.device}: corrected ECC errors rising ({r.rise('ecc_volatile_corrected')} since "
            f"the last poll, {r.current.ecc_volatile_corrected} since the last reset)",
        )


def _retired_pages(r: Reading) -> Iterable[Condition]:
    if r.current.retired_pages_pending:
        yield r.condition(
            CHECK_RETIRED_PAGES,
            "pending",
            action="COMPONENT_RESET",
            message=f"{r.gpu.device}: memory pages wait to be retired (takes effect on a GPU reset)",
        )


def _row_remap(r: Reading) -> Iterable[Condition]:
    if r.current.row_remap_pending:
        yield r.condition(
            CHECK_ROW_REMAP,
            "pending",
            action="COMPONENT_RESET",
            message=f"{r.gpu.device}: memory rows wait to be remapped (takes effect on a GPU reset)",
        )
    if r.current.row_remap_failed:
        yield r.condition(
            CHECK_ROW_REMAP,
            "failed",
            action="CONTACT_SUPPORT",
            message=f"{r.gpu.device}: a memory row remapping failed; the GPU needs service",
        )


def _thermal(r: Reading) -> Iterable[Condition]:
    if r.current.thermal_slowdown:
        yield r.condition(
            CHECK_THERMAL,
            "slowdown",
            component="thermal",
            message=f"{r.gpu.device}: clocks slowed down for heat at {r.current.temperature_c} C",
        )
    if 0 < r.thresholds.temperature_c <= r.current.temperature_c:
        yield r.condition(
            CHECK_THERMAL,
            "over-temperature",
            component="thermal",
            message=f"{r.gpu.device}: {r.current.temperature_c} C, at or above {r.thresholds.temperature_c} C",
        )


def _nvlink(r: Reading) -> Iterable[Condition]:
    for link, up in enumerate(r.current.nvlink_up):
        if not up:
            yield r.condition(
                CHECK_NVLINK,
                "link-down",
                component="nvlink",
                entity=nvlink_entity(r.gpu, link),
                action="COMPONENT_RESET",
                message=f"{r.gpu.device}: NVLink link {link} is down",
            )


def _pcie(r: Reading) -> Iterable[Condition]:
    key = condition_key(CHECK_PCIE, r.gpu.id, "replays-rising")
    if r.rising(key, "pcie_replays", r.thresholds.pcie_replay_rise):
        yield r.condition(
            CHECK_PCIE,
            "replays-rising",
            component="pcie",
            message=f"{r.gpu.device}: PCIe replays rising ({r.rise('pcie_replays')} since the last poll, "
            f"{r.current.pcie_replays} in all)",
        )


def nvlink_entity(gpu: EntityRef, link: int) -> EntityRef:
    """One link of a GPU: its own entity, so each link's fault clears on its own."""
    return EntityRef(kind="nvlink", id=f"{gpu.id}/nvlink-{link}", device=gpu.device)


RULES: tuple[Callable[[Reading], Iterable[Condition]], ...] = (
    _ecc_uncorrected,
    _ecc_corrected,
    _retired_pages,
    _row_remap,
    _thermal,
    _nvlink,
    _pcie,
)
