"""The node's record of its channel claims (``<state-dir>/computedomains/channels.json``), written before and
after each prepare so that a crash leaves nothing unaccounted for.

``started``: the claim's channel is chosen and its domain's daemon may be running, but no CDI spec was handed
to the kubelet; a start-up after a crash rolls it back (spec removed, the domain left if nothing else holds
it). ``completed``: prepared; a repeated prepare answers the same, and a start-up restarts its domain's daemon.
The file is replaced atomically; an unreadable one stops the service with its path rather than forgetting
claims the kubelet believes prepared.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Literal

import msgspec

from libs.claims.configapi import AllocationMode
from libs.files import write_atomically

LEDGER_FILE = "channels.json"
VERSION = 1


class LedgerError(Exception):
    """The ledger cannot be read; the message names the file."""


class ChannelRecord(msgspec.Struct, frozen=True, kw_only=True):
    uid: str
    namespace: str
    name: str
    domain_uid: str
    channel: int
    mode: AllocationMode
    request: str
    slot: str
    state: Literal["started", "completed"]


class _File(msgspec.Struct, frozen=True, kw_only=True):
    version: int
    claims: dict[str, ChannelRecord]


class Ledger:
    def __init__(self, path: Path, records: dict[str, ChannelRecord]) -> None:
        self.path = path
        self.records = records
        self._lock = asyncio.Lock()

    @classmethod
    def load(cls, directory: Path) -> Ledger:
        path = directory / LEDGER_FILE
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return cls(path, {})
        except OSError as exc:
            raise LedgerError(f"cannot read the channel ledger {path}: {exc}") from exc
        try:
            content = msgspec.json.decode(data, type=_File)
        except msgspec.DecodeError as exc:
            raise LedgerError(
                f"the channel ledger {path} is damaged ({exc}); it lists the prepared channel claims"
            ) from None
        if content.version != VERSION:
            raise LedgerError(f"the channel ledger {path} has version {content.version}; this gpudra reads {VERSION}")
        return cls(path, dict(content.claims))

    def held(self) -> dict[int, str]:
        """Channel → the domain holding it on this node."""
        return {record.channel: record.domain_uid for record in self.records.values()}

    def of_domain(self, domain_uid: str) -> list[ChannelRecord]:
        return [record for record in self.records.values() if record.domain_uid == domain_uid]

    async def put(self, record: ChannelRecord) -> None:
        async with self._lock:
            records = {**self.records, record.uid: record}
            await self._write(records)

    async def drop(self, uid: str) -> None:
        async with self._lock:
            if uid not in self.records:
                return
            records = {key: value for key, value in self.records.items() if key != uid}
            await self._write(records)

    async def _write(self, records: dict[str, ChannelRecord]) -> None:
        data = msgspec.json.encode(_File(version=VERSION, claims=records))
        await asyncio.to_thread(write_atomically, self.path, data)
        self.records = records
