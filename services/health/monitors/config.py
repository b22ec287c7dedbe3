"""The monitors' settings, read from the health service's settings (``GPUDRA_MONITOR_*`` and the thresholds,
prefixed because standalone mode gives every service one environment), where their defaults are declared.
"""

from __future__ import annotations

import msgspec

from services.health.monitors.counter_rules import Thresholds
from services.health.settings import Settings


class MonitorSettings(msgspec.Struct, frozen=True, kw_only=True):
    poll_seconds: float
    """How often each GPU's counters are read."""
    deadline_seconds: float
    """A poll that has not returned after this long makes its GPU unmonitored."""
    restart_seconds: float
    """First pause before restarting a crashed monitor; doubles on each crash in a row."""
    inventory_seconds: float
    """How often the GPU and MIG device list is read again (new GPUs, MIG devices created since)."""
    max_restart_seconds: float = 30.0
    """Not a setting: the cap of the restart back-off."""
    startup_seconds: float = 10.0
    """Not a setting: how long the agent waits at start for every monitor's first answer before serving anyway."""
    thresholds: Thresholds = msgspec.field(default_factory=Thresholds)

    @property
    def tick_seconds(self) -> float:
        """How often the watchdog looks: often enough to notice a missed deadline within a quarter of it."""
        return min(1.0, self.deadline_seconds / 4)

    @classmethod
    def from_settings(cls, settings: Settings) -> MonitorSettings:
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
