"""The monitors' settings, and how they are read from the health service's settings.

``MonitorSettingsSource`` names the fields the service's Settings must carry (``GPUDRA_MONITOR_*`` and the
thresholds); prefixed, because standalone mode gives every service one environment.
"""

from __future__ import annotations

from typing import Protocol

import msgspec

from services.health.monitors.counter_rules import Thresholds


class MonitorSettings(msgspec.Struct, frozen=True, kw_only=True):
    poll_seconds: float = 5.0
    """How often each GPU's counters are read."""
    deadline_seconds: float = 30.0
    """A poll that has not returned after this long makes its GPU unmonitored."""
    restart_seconds: float = 1.0
    """First pause before restarting a crashed monitor; doubles on each crash in a row."""
    max_restart_seconds: float = 30.0
    inventory_seconds: float = 60.0
    """How often the GPU and MIG device list is read again (new GPUs, MIG devices created since)."""
    startup_seconds: float = 10.0
    """How long the agent waits at start for every monitor's first answer before serving anyway."""
    thresholds: Thresholds = msgspec.field(default_factory=Thresholds)

    @property
    def tick_seconds(self) -> float:
        """How often the watchdog looks: often enough to notice a missed deadline within a quarter of it."""
        return min(1.0, self.deadline_seconds / 4)

    @classmethod
    def from_settings(cls, settings: MonitorSettingsSource) -> MonitorSettings:
        return cls(
            poll_seconds=settings.monitor_poll_seconds,
            deadline_seconds=settings.monitor_deadline_seconds,
            restart_seconds=settings.monitor_restart_seconds,
            inventory_seconds=settings.monitor_inventory_seconds,
            thresholds=Thresholds(
                ecc_uncorrected=settings.ecc_uncorrected_threshold,
                ecc_corrected_rise=settings.ecc_corrected_threshold,
                temperature_c=settings.temperature_threshold_c,
                pcie_replay_rise=settings.pcie_replay_threshold,
            ),
        )


class MonitorSettingsSource(Protocol):
    """The fields of ``services.health.settings.Settings`` the monitors read."""

    @property
    def monitor_poll_seconds(self) -> float: ...
    @property
    def monitor_deadline_seconds(self) -> float: ...
    @property
    def monitor_restart_seconds(self) -> float: ...
    @property
    def monitor_inventory_seconds(self) -> float: ...
    @property
    def ecc_uncorrected_threshold(self) -> int: ...
    @property
    def ecc_corrected_threshold(self) -> int: ...
    @property
    def temperature_threshold_c(self) -> int: ...
    @property
    def pcie_replay_threshold(self) -> int: ...
