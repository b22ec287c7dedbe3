"""Settings of admission: where its HTTPS server listens, its certificate, and whose configs it checks.

It extends ``ProcessSettings``, not ``CommonSettings``: it never connects to NATS (see service.py), so it has no
bus settings to leave unused.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from libs.claims.configapi import ComputeDomainDriverSetting
from libs.settings import ProcessSettings


def _doc(text: str) -> msgspec.Meta:
    return msgspec.Meta(description=text)


class Settings(ProcessSettings, kw_only=True, frozen=True):
    """Validating admission webhook: opaque configs of gpudra's drivers are decoded as their nodes decode them."""

    webhook_host: Annotated[str, _doc("address the HTTPS webhook binds")] = "127.0.0.1"
    webhook_port: Annotated[
        int, _doc("port of the HTTPS webhook; 0 picks a free one"), msgspec.Meta(ge=0, le=65535)
    ] = 8443
    tls_cert_file: Annotated[
        str, _doc("the webhook's certificate chain, PEM (tls.crt of its Secret); re-read when it changes")
    ] = "/etc/gpudra/admission/tls.crt"
    tls_key_file: Annotated[str, _doc("the webhook's private key, PEM (tls.key of its Secret)")] = (
        "/etc/gpudra/admission/tls.key"
    )
    driver_name: Annotated[str, _doc("DRA driver name")] = "gpu.gpudra.io"
    compute_domain_driver_name: ComputeDomainDriverSetting = "compute-domain.gpudra.io"

    def __post_init__(self) -> None:
        if self.compute_domain_driver_name == self.driver_name:
            raise ValueError(
                f"--compute-domain-driver-name {self.compute_domain_driver_name!r} is also --driver-name: a config "
                "cannot be both a GPU's and a channel's; give each driver its own name"
            )
