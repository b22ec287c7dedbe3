"""Following the simulated hardware's event log, the way a process follows NVML's event set.

A follower starts at the end of the log when it is created (not when first awaited), so an event that
happens after `events()` returns is never missed, and one from before is never replayed. The log is
polled: a stat() every few tens of milliseconds costs next to nothing and works for any number of
processes without inotify.
"""

import asyncio
import collections
import logging
from pathlib import Path

import msgspec

from libs.devices.events import DeviceEvent

logger = logging.getLogger(__name__)


class EventFollower:
    def __init__(self, path: Path, poll_interval: float) -> None:
        self._path = path
        self._poll_interval = poll_interval
        self._offset = _size(path)
        self._pending: collections.deque[bytes] = collections.deque()
        self._partial = b""
        self._decoder: msgspec.json.Decoder[DeviceEvent] = msgspec.json.Decoder(DeviceEvent)

    def __aiter__(self) -> "EventFollower":
        return self

    async def __anext__(self) -> DeviceEvent:
        while True:
            while self._pending:
                event = self._decode(self._pending.popleft())
                if event is not None:
                    return event
            if not self._read_new():
                await asyncio.sleep(self._poll_interval)

    def _read_new(self) -> bool:
        size = _size(self._path)
        if size < self._offset:  # the log was removed or truncated: start over with the new one
            self._offset, self._partial = 0, b""
        if size == self._offset:
            return False
        with self._path.open("rb") as log:
            log.seek(self._offset)
            data = log.read(size - self._offset)
        self._offset += len(data)
        *lines, self._partial = (self._partial + data).split(b"\n")
        self._pending.extend(line for line in lines if line.strip())
        return bool(lines)

    def _decode(self, line: bytes) -> DeviceEvent | None:
        try:
            return self._decoder.decode(line)
        except msgspec.DecodeError as error:
            logger.warning(
                "skipping an unreadable line in the simulated event log",
                extra={"path": str(self._path), "error": str(error)},
            )
            return None


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0
