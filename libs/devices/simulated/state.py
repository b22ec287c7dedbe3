"""The simulated hardware's state, kept in a directory so several processes share one machine.

Discovery, claim preparation, health and the fault-injection CLI run as separate processes and must see
the same GPUs, so the hardware lives on disk, not in a process:

- `state.json`: the whole state, replaced atomically (temp file, fsync, rename), so a reader never sees
  half a write and a crash never leaves a torn file;
- `state.lock`: an fcntl lock held for each read-modify-write, so concurrent changes serialize;
- `events.jsonl`: an append-only log of hardware events, written under the same lock and followed by
  `events()` subscribers (see eventlog.py).

Files are created 0600 inside a 0700 directory: the state is nobody else's business.
"""

import contextlib
import fcntl
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import NamedTuple, TypeVar, cast

import msgspec

from libs.devices.errors import StateError
from libs.devices.events import DeviceEvent
from libs.devices.model import Gpu, HealthCounters, MigDevice, MigProfile, MpsSettings, TimeSliceInterval
from libs.devices.simulated.machine import MachineProfile
from libs.files import remove_temporaries, write_atomically

SCHEMA_VERSION = 1

T = TypeVar("T")


class GpuSim(msgspec.Struct, frozen=True, kw_only=True):
    """What can change on one simulated GPU after boot."""

    counters: HealthCounters
    lost: bool = False
    sticky: bool = False
    time_slice: TimeSliceInterval = TimeSliceInterval.DEFAULT
    mps: MpsSettings | None = None


class SimState(msgspec.Struct, frozen=True, kw_only=True):
    schema_version: int = SCHEMA_VERSION
    node: str
    profile: MachineProfile
    gpus: tuple[Gpu, ...]
    mig_profiles: dict[str, tuple[MigProfile, ...]]
    mig_devices: tuple[MigDevice, ...]
    sims: dict[int, GpuSim]


class Change(msgspec.Struct, frozen=True):
    """What one transaction did: the new state (None: unchanged) and the hardware events it caused."""

    state: SimState | None
    events: Sequence[DeviceEvent] = ()


Step = Callable[[SimState | None], tuple[Change, object]]


class Failed(NamedTuple):
    """The place of a step that raised, in what ``transact_all`` returns."""

    error: Exception


class StateStore:
    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.state_path = state_dir / "state.json"
        self.lock_path = state_dir / "state.lock"
        self.events_path = state_dir / "events.jsonl"
        self._decoder = msgspec.json.Decoder(SimState)
        self._encoder = msgspec.json.Encoder()
        self._cached: tuple[tuple[int, int, int], SimState] | None = None
        self._swept = False

    def unchanged(self) -> SimState | None:
        """The state read last, if the file is still the one it came from: one stat, cheap enough for the event
        loop (a thread hop costs more than the read it would move)."""
        cached = self._cached  # one read: a writer in a worker thread may clear it meanwhile
        if cached is None:
            return None
        try:
            stat = os.stat(self.state_path)
        except OSError:
            return None
        return cached[1] if cached[0] == (stat.st_ino, stat.st_mtime_ns, stat.st_size) else None

    def read(self) -> SimState | None:
        """No lock needed: the file is only ever replaced whole, by a rename, so a new inode means new content
        and the same (inode, mtime, size) means the state decoded last time (a prepare reads it on every call)."""
        try:
            with open(self.state_path, "rb") as file:
                stat = os.fstat(file.fileno())
                key = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
                cached = self._cached
                if cached is not None and cached[0] == key:
                    return cached[1]
                data = file.read()
        except FileNotFoundError:
            return None
        try:
            state = self._decoder.decode(data)
        except msgspec.DecodeError as error:
            raise StateError(str(self.state_dir), f"state.json is unreadable ({error}); remove it") from None
        if state.schema_version != SCHEMA_VERSION:
            raise StateError(str(self.state_dir), f"schema {state.schema_version}, expected {SCHEMA_VERSION}")
        self._cached = (key, state)
        return state

    def transact(self, step: Callable[[SimState | None], tuple[Change, T]]) -> T:
        """Runs `step` on the current state under the lock and makes its change durable before unlocking."""
        [outcome] = self.transact_all([step])
        if isinstance(outcome, Failed):
            raise outcome.error
        return cast(T, outcome)

    def transact_all(self, steps: Sequence[Step]) -> list[object]:
        """Runs `steps` in order under one lock, each on the state the one before left, and makes their changes
        durable with one write: what a driver applying queued operations in one pass costs.

        A step that raises changes nothing; its place in the result holds ``Failed`` and the others still run.
        """
        outcomes: list[object] = []
        with locked(self.lock_path):
            if not self._swept:  # under the lock no other writer is half-way: what is left, a crash left
                remove_temporaries(self.state_dir)
                self._swept = True
            state = current = self.read()
            events: list[DeviceEvent] = []
            for step in steps:
                try:
                    change, result = step(state)
                except Exception as error:
                    outcomes.append(Failed(error))
                    continue
                state = change.state if change.state is not None else state
                events.extend(change.events)
                outcomes.append(result)
            if state is not current and state is not None:
                self._write(state)
            if events:
                self._append(events)
        return outcomes

    def _write(self, state: SimState) -> None:
        self._cached = None  # a freed inode can come back with the same size within one timestamp tick
        write_atomically(self.state_path, self._encoder.encode(state))

    def _append(self, events: Sequence[DeviceEvent]) -> None:
        lines = b"".join(self._encoder.encode(event) + b"\n" for event in events)
        fd = os.open(self.events_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            _write_all(fd, lines)
        finally:
            os.close(fd)


@contextlib.contextmanager
def locked(lock_path: Path) -> Iterator[None]:
    """Holds an fcntl lock on ``lock_path`` (created 0600 in a 0700 directory): the machine's processes take turns."""
    lock_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
