"""The NVML event stream: one event set per backend, waited on by one thread, fanned out to subscribers.

`nvmlEventSetWait` blocks, so it runs in a thread with a short timeout (to notice a stop) and hands each
event to the event loop with call_soon_threadsafe. Every subscriber has its own bounded queue: a consumer
that stops reading loses its own oldest events (with a warning), never another consumer's.
"""

import asyncio
import contextlib
import ctypes
import logging
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import pynvml

from libs.devices.errors import DeviceError
from libs.devices.events import DeviceEvent, EccEvent, GpuLostEvent, RecoveryActionEvent, XidEvent
from libs.devices.nvml.calls import text

logger = logging.getLogger(__name__)

XID = pynvml.nvmlEventTypeXidCriticalError
SINGLE_BIT = pynvml.nvmlEventTypeSingleBitEccError
DOUBLE_BIT = pynvml.nvmlEventTypeDoubleBitEccError
GPU_LOST = getattr(pynvml, "nvmlEventTypeGpuUnavailableError", 0x4000)
RECOVERY = getattr(pynvml, "nvmlEventTypeGpuRecoveryAction", 0x8000)
WANTED = XID | SINGLE_BIT | DOUBLE_BIT | GPU_LOST | RECOVERY
_NO_INSTANCE = 0xFFFFFFFF
QUEUE_SIZE = 1024


def to_event(data: Any, minor: int, uuid: str) -> DeviceEvent | None:
    """One NVML event record as a typed event; None for types we did not ask for."""
    kind = data.eventType
    if kind & XID:
        return XidEvent(
            minor=minor,
            uuid=uuid,
            xid=int(data.eventData),
            gpu_instance_id=_instance(data.gpuInstanceId),
            compute_instance_id=_instance(data.computeInstanceId),
        )
    if kind & (SINGLE_BIT | DOUBLE_BIT):
        return EccEvent(minor=minor, uuid=uuid, double_bit=bool(kind & DOUBLE_BIT))
    if kind & GPU_LOST:
        return GpuLostEvent(minor=minor, uuid=uuid)
    if kind & RECOVERY:
        return RecoveryActionEvent(minor=minor, uuid=uuid, action=int(data.eventData))
    return None


def handle_key(handle: Any) -> int | None:
    """NVML device handles are pointers; the address identifies the device across calls."""
    return ctypes.cast(handle, ctypes.c_void_p).value


def _instance(value: int) -> int | None:
    """NVML marks 'not on a MIG device' with 0xFFFFFFFF."""
    return None if value == _NO_INSTANCE else int(value)


class EventWatcher:
    def __init__(self, node: str, handles: Callable[[], dict[int, Any]], timeout_ms: int = 500) -> None:
        self._node = node
        self._handles = handles
        self._timeout_ms = timeout_ms
        self._devices: dict[int | None, tuple[int, str]] = {}
        self._subscribers: set[asyncio.Queue[DeviceEvent]] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._event_set: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def subscribe(self) -> AsyncIterator[DeviceEvent]:
        """Registers the queue now, so events after this call are delivered even before the first await."""
        if self._thread is None:
            self._start()
        queue: asyncio.Queue[DeviceEvent] = asyncio.Queue(QUEUE_SIZE)
        self._subscribers.add(queue)
        return self._drain(queue)

    async def _drain(self, queue: asyncio.Queue[DeviceEvent]) -> AsyncIterator[DeviceEvent]:
        try:
            while True:
                yield await queue.get()
        finally:
            self._subscribers.discard(queue)

    def _start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name=f"nvml-events-{self._node}", daemon=True)
        self._thread.start()

    def _register_all(self) -> None:
        """In the watcher's thread: finding the handles may need a discovery, which blocks."""
        self._event_set = pynvml.nvmlEventSetCreate()
        for minor, handle in self._handles().items():
            self._register(minor, handle)

    def _register(self, minor: int, handle: Any) -> None:
        try:
            self._devices[handle_key(handle)] = (minor, text(pynvml.nvmlDeviceGetUUID(handle)))
            supported = pynvml.nvmlDeviceGetSupportedEventTypes(handle)
            pynvml.nvmlDeviceRegisterEvents(handle, supported & WANTED, self._event_set)
        except pynvml.NVMLError as error:
            logger.warning(
                "GPU events are not monitored",
                extra={"node": self._node, "device": f"gpu-{minor}", "error": str(error)},
            )

    def _run(self) -> None:
        try:
            self._register_all()
        except DeviceError as error:
            logger.error("cannot watch GPU events", extra={"node": self._node, "error": str(error)})
            return
        while not self._stop.is_set():
            try:
                data = pynvml.nvmlEventSetWait(self._event_set, self._timeout_ms)
            except pynvml.NVMLError as error:
                if error.value != pynvml.NVML_ERROR_TIMEOUT:
                    logger.error("waiting for NVML events failed", extra={"node": self._node, "error": str(error)})
                    self._stop.wait(self._timeout_ms / 1000)
                continue
            self._deliver(data)

    def _deliver(self, data: Any) -> None:
        """Looks the device up by handle: a lost GPU no longer answers nvmlDeviceGetUUID."""
        minor, uuid = self._devices.get(handle_key(data.device), (-1, "unknown"))
        event = to_event(data, minor, uuid)
        if event is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(self._publish, event)

    def _publish(self, event: DeviceEvent) -> None:
        for queue in self._subscribers:
            if queue.full():
                queue.get_nowait()
                logger.warning("dropped the oldest GPU event of a slow subscriber", extra={"node": self._node})
            queue.put_nowait(event)

    async def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
            with contextlib.suppress(pynvml.NVMLError):
                pynvml.nvmlEventSetFree(self._event_set)
