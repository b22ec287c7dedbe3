"""Settings of kubelet_shim: the common ones plus its own."""

from __future__ import annotations

from typing import Annotated

import msgspec

from libs.settings import CommonSettings


class Settings(CommonSettings, kw_only=True, frozen=True):
    """The kubelet's face: registration and DRA gRPC sockets, turned into NATS requests."""

    kubelet_dir: Annotated[str, msgspec.Meta(description="kubelet root directory")] = "/var/lib/kubelet"
    driver_name: Annotated[str, msgspec.Meta(description="DRA driver name")] = "gpu.gpudra.io"
