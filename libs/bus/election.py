"""Leadership and liveness of controller replicas, in the ``gpudra_leases`` KV bucket (entries expire after
30 s unless renewed). Each controller has its own key prefix there (``remediation.``, ``computedomains.``:
``libs.bus.topology``), which its role may write and no other.

- ``<prefix>leader``: held by one replica, renewed with compare-and-set. The leader does what must be done once for
  the cluster: it turns Node changes into inputs at once and takes over work a dead replica left behind.
  A replica that restarts under the same identity (a pod name) takes its lease back at once.
- ``<prefix>replicas.<id>``: each replica's presence, with its incarnation (new at every start). Work in an outbox
  names the replica and incarnation that does it; when that pair is no longer present, the work is an
  orphan and the leader adopts it.

Losing the lease without noticing is harmless: every write of a book is itself compare-and-set.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import socket
from collections.abc import Callable
from typing import Annotated, Literal

import msgspec
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError, NoKeysError
from nats.js.kv import KeyValue

log = logging.getLogger(__name__)

_KEY_SAFE = re.compile(r"[^-_A-Za-z0-9]")

# Settings every controller with replicas declares the same way (one name, one meaning, in every service).
RoleSetting = Annotated[
    Literal["node", "controller", "both"],
    msgspec.Meta(description="node side, cluster controller, or both (one process: standalone)"),
]
ControllerIdSetting = Annotated[
    str, msgspec.Meta(description="this controller replica's identity (default: the host name, i.e. the pod name)")
]
LeaseRenewSetting = Annotated[
    float,
    msgspec.Meta(
        description="how often the leader lease and the replica's presence are renewed (they expire after 30 s)",
        gt=0,
        lt=30,
    ),
]


def default_replica() -> str:
    """The host name (in a pod: the pod name), which stays the same across restarts of one replica."""
    return os.environ.get("HOSTNAME") or socket.gethostname() or "controller"


class Holder(msgspec.Struct, frozen=True):
    replica: str
    incarnation: str


def owner_of(replica: str, incarnation: str) -> str:
    """How an outbox entry names who does it."""
    return f"{replica}/{incarnation}"


def key_safe(replica: str) -> str:
    return _KEY_SAFE.sub("-", replica) or "controller"


class Election:
    def __init__(
        self,
        kv: KeyValue,
        prefix: str,
        *,
        replica: str,
        incarnation: str,
        renew_seconds: float,
        on_change: Callable[[bool], None],
    ) -> None:
        self._kv = kv
        self._lease_key = f"{prefix}leader"
        self._presence = f"{prefix}replicas."
        self.replica = key_safe(replica)
        self.incarnation = incarnation
        self._renew = renew_seconds
        self._on_change = on_change
        self._revision = 0
        self.is_leader = False
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """One round now (so a lone replica leads from its first moment), then renewals in the background."""
        await self._round()
        self._task = asyncio.create_task(self._loop(), name=f"lease {self._lease_key}")

    async def stop(self) -> None:
        """Hands the lease back and says this incarnation is gone, so others need not wait 30 s."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(Exception):
            await self._kv.delete(self._presence + self.replica)
            if self.is_leader:
                await self._kv.delete(self._lease_key, last=self._revision)
        self._set(False)

    async def alive(self) -> dict[str, str]:
        """Replica → incarnation of every replica present now."""
        try:
            keys = await self._kv.keys()
        except NoKeysError:
            return {}
        present: dict[str, str] = {}
        for key in keys:
            if key.startswith(self._presence):
                with contextlib.suppress(KeyNotFoundError):
                    entry = await self._kv.get(key)
                    present[key.removeprefix(self._presence)] = (entry.value or b"").decode()
        return present

    def orphaned(self, alive: dict[str, str]) -> Callable[[str], bool]:
        """Whether an entry's owner (``replica/incarnation``) is gone."""

        def check(owner: str) -> bool:
            replica, _, incarnation = owner.partition("/")
            return alive.get(replica) != incarnation

        return check

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._renew)
            try:
                await self._round()
            except Exception as exc:
                log.warning("lease renewal failed: %s", exc, extra={"replica": self.replica, "lease": self._lease_key})
                self._set(False)

    async def _round(self) -> None:
        await self._kv.put(self._presence + self.replica, self.incarnation.encode())
        self._set(await self._hold())

    async def _hold(self) -> bool:
        value = msgspec.json.encode(Holder(self.replica, self.incarnation))
        try:
            if self.is_leader:
                self._revision = await self._kv.update(self._lease_key, value, last=self._revision)
                return True
            try:
                entry = await self._kv.get(self._lease_key)
            except KeyNotFoundError as exc:
                last = (exc.entry.revision or 0) if exc.entry is not None else 0
            else:
                holder = msgspec.json.decode(entry.value or b"{}", type=Holder)
                if holder.replica != self.replica:
                    return False
                last = entry.revision or 0
            self._revision = await self._kv.update(self._lease_key, value, last=last)
            return True
        except (KeyWrongLastSequenceError, msgspec.DecodeError):
            return False

    def _set(self, leader: bool) -> None:
        if leader != self.is_leader:
            self.is_leader = leader
            log.info("leader" if leader else "not leader", extra={"replica": self.replica, "lease": self._lease_key})
            self._on_change(leader)
