"""Settings of health: the common ones plus its own."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from libs.settings import CommonSettings


class Settings(CommonSettings, kw_only=True, frozen=True):
    """GPU fault detection on the node and the cluster-wide remediation controller."""

    role: Annotated[
        Literal["node", "controller", "both"], msgspec.Meta(description="node monitors, controller or both")
    ] = "both"
