"""The standalone trust chain: one operator, a system account and the ``GPUDRA`` account, users minted per client.

``gpudra up`` runs nats-server in operator mode with these account JWTs preloaded (memory resolver), so every
client must present a user JWT signed by the ``GPUDRA`` account: there is no anonymous access. The operator
and account seeds are kept (0600) in ``<state-dir>/trust`` and reused at the next start, because JetStream keeps
an account's streams under the account's public key: a new account would start with an empty bus.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from nats.aio.client import RawCredentials

from libs.files import write_atomically
from libs.trust import creds, jwt
from libs.trust.grants import admin, inbox
from libs.trust.keys import Kind, key_pair, new_seed, public_key
from libs.trust.permissions import Permissions
from libs.trust.roles import Role, permissions

ACCOUNT = "GPUDRA"
SYSTEM_ACCOUNT = "SYS"
OPERATOR = "gpudra"
MAX_CONTROL_LINE = 64 * 1024
_SEEDS = {"operator": Kind.OPERATOR, "system": Kind.ACCOUNT, "account": Kind.ACCOUNT}


def _load_or_create_seed(path: Path, kind: Kind) -> str:
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        seed = new_seed(kind)
        write_atomically(path, seed.encode(), mode=0o600, parent_mode=0o700)
        return seed


class Authority:
    """Signs the accounts for nats-server and the users for gpudra's clients."""

    def __init__(self, operator_seed: str, system_seed: str, account_seed: str) -> None:
        self._operator = operator_seed
        self._system = system_seed
        self._account = account_seed

    @classmethod
    def open(cls, directory: Path) -> Authority:
        """The authority kept in ``directory`` (created owner-only on first use)."""
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        directory.chmod(0o700)
        seeds = {name: _load_or_create_seed(directory / f"{name}.nk", kind) for name, kind in _SEEDS.items()}
        return cls(seeds["operator"], seeds["system"], seeds["account"])

    @property
    def account(self) -> str:
        return public_key(self._account)

    def server_config(self) -> dict[str, Any]:
        """The nats-server settings that make it trust this operator and know both accounts."""
        operator_key = key_pair(self._operator)
        system = public_key(self._system)
        operator_jwt = jwt.encode(jwt.operator_claims(OPERATOR, public_key(self._operator), system), operator_key)
        accounts = {
            system: jwt.encode(jwt.account_claims(SYSTEM_ACCOUNT, system, jetstream=False), operator_key),
            self.account: jwt.encode(jwt.account_claims(ACCOUNT, self.account, jetstream=True), operator_key),
        }
        return {
            # A client sends its user JWT in CONNECT; the operator's lists every subject it may use (about 5 KiB),
            # over the default 4 KiB line limit.
            "max_control_line": MAX_CONTROL_LINE,
            "operator": operator_jwt,
            "system_account": system,
            "resolver": "MEMORY",
            "resolver_preload": accounts,
        }

    def mint(self, name: str, granted: Permissions, *, lifetime: float | None = None) -> bytes:
        """A fresh user key and its JWT, as the text of a ``.creds`` file."""
        seed = new_seed(Kind.USER)
        expires = int(time.time() + lifetime) if lifetime is not None else None
        claims = jwt.user_claims(name, public_key(seed), granted, expires=expires)
        return creds.render(jwt.encode(claims, key_pair(self._account)), seed)

    def write(self, path: Path, name: str, granted: Permissions, *, lifetime: float | None = None) -> Path:
        write_atomically(path, self.mint(name, granted, lifetime=lifetime), mode=0o600, parent_mode=0o700)
        return path

    def issue(
        self,
        path: Path,
        principal: str,
        roles: Iterable[Role],
        node: str,
        *,
        local_kube: bool = True,
        lifetime: float | None = None,
    ) -> Path:
        """Credentials at ``path`` for ``principal`` holding ``roles`` on ``node`` (user name ``principal@node``).

        ``local_kube``: the standalone Kubernetes store is theirs to use (it is in every system this issues for).
        """
        granted = permissions(roles, principal=principal, node=node, local_kube=local_kube)
        return self.write(path, f"{principal}@{node}", granted, lifetime=lifetime)

    def probe_options(self) -> dict[str, Any]:
        """How a readiness probe connects: a short-lived in-memory user that may ask JetStream how it is."""
        granted = admin() | inbox("probe", "probe")
        text = self.mint("probe", granted, lifetime=300).decode()
        return {"user_credentials": RawCredentials(text), "inbox_prefix": "_INBOX.probe.probe"}
