"""Settings every gpudra process shares: who and where it is, how it reports (``ProcessSettings``), and for the
services on the bus, where the bus is and how to log in (``CommonSettings``).

The admission webhook is the one process without the bus: its settings extend ``ProcessSettings`` alone, so it
has no ``--nats-url`` that would do nothing."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec


def _doc(text: str) -> msgspec.Meta:
    return msgspec.Meta(description=text)


class ProcessSettings(msgspec.Struct, kw_only=True, frozen=True):
    """Fields every gpudra process has, on the bus or not."""

    node_name: Annotated[
        str,
        _doc("this node's Kubernetes name"),
        msgspec.Meta(pattern=r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"),
    ] = "node-0"
    metrics_port: Annotated[
        int, _doc("Prometheus port; 0 picks a free one, -1 disables"), msgspec.Meta(ge=-1, le=65535)
    ] = 0
    metrics_host: Annotated[str, _doc("address the metrics endpoint binds")] = "127.0.0.1"
    log_level: Annotated[Literal["DEBUG", "INFO", "WARNING", "ERROR"], _doc("log level")] = "INFO"
    log_format: Annotated[Literal["json", "text"], _doc("json lines or text for a person")] = "json"


class CommonSettings(ProcessSettings, kw_only=True, frozen=True):
    """Fields shared by all services on the bus; each service subclasses this with its own."""

    nats_url: Annotated[str, _doc("NATS server URL(s), comma-separated")] = "nats://127.0.0.1:4222"
    nats_creds: Annotated[str, _doc("NATS credentials file (user JWT + nkey seed)")] = ""
    nats_token_file: Annotated[
        str,
        _doc("token file for the NATS auth callout (a projected ServiceAccount token), read at each connect"),
    ] = ""
    nats_user: Annotated[str, _doc("NATS user name, with --nats-password-file (the auth callout's own login)")] = ""
    nats_password_file: Annotated[str, _doc("file holding the password of --nats-user")] = ""
    nats_tls_ca: Annotated[str, _doc("CA bundle to verify the NATS server")] = ""
    nats_tls_cert: Annotated[str, _doc("client certificate for NATS mutual TLS")] = ""
    nats_tls_key: Annotated[str, _doc("client key for NATS mutual TLS")] = ""
    state_dir: Annotated[str, _doc("directory for local state (checkpoints, simulated hardware)")] = ".gpudra"
