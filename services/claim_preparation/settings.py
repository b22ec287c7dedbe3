"""Settings of claim_preparation: the common ones plus its own."""

from __future__ import annotations

from typing import Annotated

import msgspec

from libs.settings import CommonSettings


class Settings(CommonSettings, kw_only=True, frozen=True):
    """NodePrepareResources / NodeUnprepareResources work: claims, opaque config, MIG, CDI, checkpoint."""

    driver_name: Annotated[str, msgspec.Meta(description="DRA driver name")] = "gpu.gpudra.io"
    cdi_dir: Annotated[str, msgspec.Meta(description="directory for transient CDI specs")] = "/var/run/cdi"
