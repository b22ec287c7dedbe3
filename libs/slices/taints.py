"""Device taints (KEP-5055) as the health service hands them to the slice builder, per device name."""

import logging
from collections.abc import Sequence
from typing import Literal

import msgspec

from libs.slices.limits import SliceLimits

logger = logging.getLogger(__name__)

Effect = Literal["NoExecute", "NoSchedule", "None"]
_SEVERITY: dict[str, int] = {"NoExecute": 0, "NoSchedule": 1, "None": 2}


class DeviceTaint(msgspec.Struct, frozen=True, kw_only=True):
    key: str
    effect: Effect
    value: str | None = None
    time_added: str | None = None

    def as_dict(self) -> dict[str, str]:
        taint = {"key": self.key, "effect": self.effect}
        if self.value is not None:
            taint["value"] = self.value
        if self.time_added is not None:
            taint["timeAdded"] = self.time_added
        return taint


def allowed_taints(device: str, taints: Sequence[DeviceTaint], limits: SliceLimits) -> list[dict[str, str]]:
    """What this Kubernetes version accepts: `None` effects only from 1.35, and the most severe first when
    there are more than the per-device limit (a dropped NoSchedule is better than a dropped NoExecute)."""
    usable = [t for t in taints if limits.none_effect_allowed or t.effect != "None"]
    if len(usable) < len(taints):
        logger.warning(
            "dropping taints with effect None, which Kubernetes 1.%d does not accept",
            limits.minor,
            extra={"device": device, "taints": [t.key for t in taints if t.effect == "None"]},
        )
    usable.sort(key=lambda t: _SEVERITY[t.effect])
    if len(usable) > limits.max_taints_per_device:
        logger.warning(
            "dropping the least severe taints over the per-device limit",
            extra={"device": device, "dropped": [t.key for t in usable[limits.max_taints_per_device :]]},
        )
    return [t.as_dict() for t in usable[: limits.max_taints_per_device]]
