"""Claim events the node owes: ``ClaimPrepared`` and ``ClaimUnprepared`` go out at least once, even across kill -9.

The change an event announces is durable before the event is sent (the checkpoint record says so), and a crash
in between must not lose the event: whoever reacts to claims (and the kubelet's retry, answered from the
checkpoint) would never hear of it. The outbox closes the gap without one more fsync on the fast path:

- Every announcement has an id chosen before its record is written, and the record keeps it. JetStream drops a
  second publish with the same id inside the stream's duplicate window, so sending again is harmless.
- ``ClaimUnprepared`` is sent before the record goes: a crash leaves an ``UnprepareStarted`` record, which the
  next start rolls back (undoing is idempotent) and announces with the same id.
- ``ClaimPrepared`` is sent after its ``PrepareCompleted`` record. ``outbox.json`` beside the records holds a
  watermark: every announcement expected before it has been confirmed by JetStream. It is rewritten in the
  background after sends settle; at start, every ``PrepareCompleted`` record from the watermark on is announced
  again with its id. A crash therefore costs at most a few duplicate publishes, which JetStream drops (or, after a
  downtime longer than the window, a repeat with the same id, which consumers can drop).
- A send the bus refuses is kept and retried every ``RETRY_SECONDS``. When the record that would otherwise bring
  it back is about to go (an unprepare while the bus is down), the event itself is written to ``outbox.json``
  first.
- One claim's events are stored in the order they happened: a claim's sends take turns, each first sends again
  what the claim still owes, and one that cannot is kept behind it. Otherwise a failover could store a claim's
  ``ClaimUnprepared`` before the retry of its ``ClaimPrepared`` (or a new ``ClaimPrepared`` before the retry of
  the last ``ClaimUnprepared``), and a consumer would take the released claim for prepared, or the reverse.

The file is small (a watermark and the events still owed), replaced atomically (see ``libs.files``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from libs.bus import Bus
from libs.events import Event
from libs.events.envelope import new_event_id
from libs.events.registry import event_class
from libs.files import write_atomically
from services.claim_preparation import metrics

log = logging.getLogger(__name__)

FORMAT = "gpudra.io/claim-outbox"
VERSION = 1
FILE_NAME = "outbox.json"
RETRY_SECONDS = 2.0
"""How often refused sends are retried and the watermark is brought forward."""


class Letter(msgspec.Struct, frozen=True, kw_only=True):
    """One owed event as the file keeps it: its CloudEvents type and id, when it became owed, its data."""

    id: str
    since: float
    type: str
    data: msgspec.Raw


class OutboxFile(msgspec.Struct, frozen=True, kw_only=True):
    format: str
    version: int
    watermark: float
    owed: list[Letter] = []


@dataclass(frozen=True)
class Owed:
    event: Event
    since: float


@dataclass
class _Turns:
    """One claim's sends, one at a time, in the order they were asked for (``asyncio.Lock`` is fair)."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


class Outbox:
    def __init__(self, bus: Bus, directory: Path) -> None:
        self._bus = bus
        self.path = directory / FILE_NAME
        self.watermark = 0.0
        """Announcements expected before this time were confirmed when it was written (0: none known)."""
        self._expected: dict[str, float] = {}
        self._owed: dict[str, Owed] = {}
        self._confirmed = False
        """An announcement was confirmed since the last write: the watermark can move."""
        self._owed_written: frozenset[str] = frozenset()
        self._lock = asyncio.Lock()
        self._in_flight: set[asyncio.Task[bool]] = set()
        self._turns: dict[str, _Turns] = {}

    # --- the fast path -------------------------------------------------------------------------------------

    def expect(self) -> tuple[str, float]:
        """An id and a time for an announcement whose record is about to be written; it stays unsettled (and
        holds the watermark back) until ``send`` confirms it or ``cancel`` drops it."""
        event_id, since = new_event_id(), time.time()
        self._expected[event_id] = since
        return event_id, since

    def cancel(self, event_id: str) -> None:
        """The record announcing it was never written: nothing is owed."""
        self._expected.pop(event_id, None)

    async def send(self, event: Event, event_id: str) -> bool:
        """Publish after what the claim still owes from before (sent again first); a refusal, of this event or
        of one before it, keeps the event owed (retried, in order) and returns False. Never raises."""
        claim = event.ce_subject()
        async with self._turn(claim):
            for earlier_id, earlier in self._owed_before(claim, event_id):
                if not await self._publish(earlier.event, earlier_id):
                    self._owe(event, event_id, f"{type(earlier.event).__name__} {earlier_id} before it is owed")
                    return False
            return await self._publish(event, event_id)

    async def _publish(self, event: Event, event_id: str) -> bool:
        since = self._expected.get(event_id, time.time())
        try:
            await self._bus.publish(event, event_id=event_id)
        except Exception as exc:
            self._owe(event, event_id, str(exc), since)
            return False
        self._settled(event_id)
        return True

    def _owe(self, event: Event, event_id: str, reason: str, since: float | None = None) -> None:
        self._owed[event_id] = Owed(event, since if since is not None else self._expected.get(event_id, time.time()))
        metrics.EVENTS_OWED.set(len(self._owed))
        log.warning(
            "could not publish %s; kept to retry: %s",
            type(event).__name__,
            reason,
            extra={"event": event.ce_type(), "event_id": event_id, "claim": event.ce_subject()},
        )

    def _owed_before(self, claim: str, event_id: str) -> list[tuple[str, Owed]]:
        """The claim's owed events older than ``event_id`` (all of them when it is not owed itself)."""
        before: list[tuple[str, Owed]] = []
        for owed_id, owed in self._owed.items():
            if owed_id == event_id:
                break
            if owed.event.ce_subject() == claim:
                before.append((owed_id, owed))
        return before

    @contextlib.asynccontextmanager
    async def _turn(self, claim: str) -> AsyncIterator[None]:
        turns = self._turns.setdefault(claim, _Turns())
        turns.users += 1
        try:
            async with turns.lock:
                yield
        finally:
            turns.users -= 1
            if not turns.users:
                del self._turns[claim]

    async def send_ahead(self, event: Event, event_id: str) -> None:
        """Put the event on the wire now and wait for JetStream's confirmation in the background.

        For an announcement whose record stays (``ClaimPrepared``): the answer to the kubelet, written after
        this on the same connection, reaches the server after the event, and the JetStream round trip is off
        the kubelet's path. Until confirmed the event holds the watermark back, so a crash still sends it again.
        """
        task = asyncio.create_task(self.send(event, event_id))
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)
        await asyncio.sleep(0)  # the task runs up to its wait for the ack: its PUB is in the write buffer

    async def tell(self, event: Event) -> None:
        """Publish a fact nothing durable depends on (a failed attempt the kubelet retries anyway)."""
        try:
            await self._bus.publish(event)
        except Exception as exc:
            log.warning("could not publish %s: %s", type(event).__name__, exc, extra={"event": event.ce_type()})

    def _settled(self, event_id: str) -> None:
        self._confirmed = True  # also a repeat sent at start: the watermark moves past it, and no start repeats it
        self._expected.pop(event_id, None)
        if self._owed.pop(event_id, None) is not None:
            metrics.EVENTS_OWED.set(len(self._owed))

    # --- keeping it durable --------------------------------------------------------------------------------

    async def keep(self) -> None:
        """Write the owed events now: the record that would bring one back is about to go."""
        await self.flush(retry=False)

    async def secure(self, event: Event, event_id: str) -> None:
        """The record that would announce ``event`` again after a crash is about to change (a completed claim
        whose unprepare begins): unless JetStream confirmed it, the file holds the event first. Its send may
        still be in flight; a confirmation settles the copy, a crash sends it again (JetStream drops a repeat).
        """
        if event_id not in self._expected and event_id not in self._owed:
            return
        self._owed.setdefault(event_id, Owed(event, self._expected.get(event_id, time.time())))
        await self._write()

    async def flush(self, *, retry: bool = True) -> None:
        """Retry owed events, then write the file if the watermark can move or what is owed changed.

        Idle, it writes nothing: only a confirmed announcement or a change in what is owed makes a write."""
        await asyncio.gather(*self._in_flight)
        if retry:
            refused: set[str] = set()  # claims whose oldest owed event was refused: the rest of theirs waits
            for event_id, owed in list(self._owed.items()):
                claim = owed.event.ce_subject()
                if claim not in refused and event_id in self._owed and not await self.send(owed.event, event_id):
                    refused.add(claim)
        await self._write()

    async def _write(self) -> None:
        async with self._lock:
            owed_ids = frozenset(self._owed)
            if not self._confirmed and owed_ids == self._owed_written:
                return
            self._confirmed = False  # a confirmation during the write below makes the next round write again
            watermark = min([*self._expected.values(), *(o.since for o in self._owed.values())], default=time.time())
            letters = [_letter(event_id, owed) for event_id, owed in self._owed.items()]
            content = OutboxFile(format=FORMAT, version=VERSION, watermark=watermark, owed=letters)
            await asyncio.to_thread(write_atomically, self.path, msgspec.json.encode(content))
            self._owed_written, self.watermark = owed_ids, watermark

    # --- start ---------------------------------------------------------------------------------------------

    def load(self) -> list[str]:
        """Read the watermark and the owed events (blocking); problems are returned, the file is then ignored."""
        try:
            content = msgspec.json.decode(self.path.read_bytes(), type=OutboxFile)
        except FileNotFoundError:
            return []
        except (OSError, msgspec.DecodeError) as exc:
            return [f"{self.path}: unreadable ({exc}); every prepared claim will be announced again"]
        if content.format != FORMAT or content.version != VERSION:
            return [f"{self.path}: format {content.format} v{content.version} is not {FORMAT} v{VERSION}; ignored"]
        self.watermark = content.watermark
        problems: list[str] = []
        for letter in content.owed:
            cls = event_class(letter.type)
            try:
                if cls is None:
                    raise msgspec.ValidationError(f"unknown event type {letter.type}")
                self._owed[letter.id] = Owed(msgspec.json.decode(letter.data, type=cls), letter.since)
            except msgspec.DecodeError as exc:
                problems.append(f"{self.path}: owed event {letter.id} dropped: {exc}")
        self._owed_written = frozenset(self._owed)
        metrics.EVENTS_OWED.set(len(self._owed))
        return problems

    @property
    def owed(self) -> dict[str, Event]:
        """Events the bus refused so far, by id (read-only use: tests, status)."""
        return {event_id: owed.event for event_id, owed in self._owed.items()}


def _letter(event_id: str, owed: Owed) -> Letter:
    data = msgspec.Raw(msgspec.json.encode(owed.event))
    return Letter(id=event_id, since=owed.since, type=owed.event.ce_type(), data=data)
