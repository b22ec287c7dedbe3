"""Settings of discovery: the common ones plus its own."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from libs.settings import CommonSettings


class Settings(CommonSettings, kw_only=True, frozen=True):
    """Device inventory (NVML or simulated) and ResourceSlices for this node."""

    backend: Annotated[Literal["nvml", "simulated"], msgspec.Meta(description="device backend")] = "nvml"
    profile: Annotated[str, msgspec.Meta(description="simulated machine profile or YAML file")] = "dgx-h100"
    resync_seconds: Annotated[float, msgspec.Meta(description="full inventory resync period", gt=0)] = 300.0
