"""A bus in cluster mode for tests: nats-server with the auth callout (config mode), the callout service
running against the test API server, and clients that log in with a pod's ServiceAccount token.

The server's configuration is the one deploy/kustomize gives the in-cluster NATS (accounts AUTH, GPUDRA and
SYS; the callout's user in AUTH; every other client sent through the callout), minus TLS.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from libs.bus import Bus
from libs.files import write_atomically
from libs.natsserver import EmbeddedNats
from libs.settings import CommonSettings
from libs.trust.keys import Kind, new_seed, public_key
from services.auth_callout.service import lifespan
from services.auth_callout.settings import Settings
from tests.support.kubeapi import KubeApiServer

AUDIENCE = "gpudra-nats"
NAMESPACE = "gpudra-system"
CALLOUT_USER = "auth"


class CalloutServerAuth:
    """The server side of callout mode; the issuer seed and the callout's password live in ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.issuer_seed_file = directory / "issuer.nk"
        self.password_file = directory / "password"
        seed = new_seed(Kind.ACCOUNT)
        self.issuer = public_key(seed)
        self.password = secrets.token_urlsafe(24)
        write_atomically(self.issuer_seed_file, seed.encode())
        write_atomically(self.password_file, self.password.encode())

    def server_config(self) -> dict[str, Any]:
        return {
            "accounts": {
                "AUTH": {"users": [{"user": CALLOUT_USER, "password": self.password}]},
                "GPUDRA": {"jetstream": "enabled"},
                "SYS": {},
            },
            "system_account": "SYS",
            "authorization": {
                "timeout": 5,
                "auth_callout": {"issuer": self.issuer, "account": "AUTH", "auth_users": [CALLOUT_USER]},
            },
        }

    def probe_options(self) -> dict[str, Any] | None:
        return None  # only the callout's own user skips the callout, and its account has no JetStream

    def callout_settings(self, url: str, kube_api: KubeApiServer, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "nats_url": url,
            "nats_user": CALLOUT_USER,
            "nats_password_file": str(self.password_file),
            "issuer_seed_file": str(self.issuer_seed_file),
            "kubeconfig": kube_api.url,
            "metrics_port": -1,
            **overrides,
        }
        return Settings(**values)


@asynccontextmanager
async def running_callout(server: EmbeddedNats, kube_api: KubeApiServer, **overrides: Any) -> AsyncIterator[Bus]:
    """The auth callout service answering ``server``'s requests until the block exits."""
    assert isinstance(server.auth, CalloutServerAuth)
    settings = server.auth.callout_settings(server.url, kube_api, **overrides)
    bus = await Bus.connect(settings, "auth_callout")
    try:
        async with lifespan(bus, settings):
            await bus.nc.flush()
            yield bus
    finally:
        await bus.close()


def pod_token(kube_api: KubeApiServer, directory: Path, name: str, service_account: str, node: str) -> Path:
    """A running pod on ``node`` and its projected token (audience gpudra-nats) written where it mounts it."""
    pod = kube_api.store.create(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {
                "nodeName": node,
                "serviceAccountName": service_account,
                "containers": [{"name": "c", "image": "i"}],
            },
        }
    )
    token = kube_api.tokens.issue(
        NAMESPACE, service_account, audiences=(AUDIENCE,), node=node, pod=name, pod_uid=pod["metadata"]["uid"]
    )
    path = directory / f"{name}.token"
    path.write_text(token)
    return path


def token_settings(url: str, token_file: Path, node: str) -> CommonSettings:
    return CommonSettings(nats_url=url, node_name=node, nats_token_file=str(token_file))
