"""Settings of compute_domain: the common ones plus its own."""

from __future__ import annotations

from typing import Annotated

import msgspec

from libs.settings import CommonSettings


class Settings(CommonSettings, kw_only=True, frozen=True):
    """ComputeDomain controller and node-side IMEX channel preparation."""

    driver_name: Annotated[str, msgspec.Meta(description="compute-domain DRA driver name")] = "compute-domain.gpudra.io"
