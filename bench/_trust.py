"""The benches' nats-server runs as ``gpudra up`` runs it: authentication on, each service with its own roles.

Not a benchmark (the leading underscore keeps ``python -m bench`` from running it).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from libs.natsserver import EmbeddedNats
from libs.settings import CommonSettings
from libs.trust.authority import Authority
from libs.trust.permissions import EVERYTHING
from libs.trust.roles import SERVICE_ROLES, Role


class SecuredServer:
    """An embedded nats-server whose authority lives in ``<directory>/trust``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.authority = Authority.open(directory / "trust")
        self.server = EmbeddedNats(directory / "nats", auth=self.authority)

    @property
    def url(self) -> str:
        return self.server.url

    def creds(self, principal: str, node: str, roles: Iterable[Role] | None = None) -> str:
        """Credentials for ``roles`` (a service's own when None and ``principal`` is a service; else everything:
        the bench plays the kubelet, the API server and every other party)."""
        path = self.directory / "trust" / "users" / f"{principal}@{node}.creds"
        held = list(roles) if roles is not None else list(SERVICE_ROLES.get(principal, ()))
        if held:
            return str(self.authority.issue(path, principal, held, node))
        return str(self.authority.write(path, principal, EVERYTHING))

    def settings(self, principal: str, node: str) -> CommonSettings:
        return CommonSettings(nats_url=self.url, node_name=node, nats_creds=self.creds(principal, node))
