"""Moving a PCI function between drivers through sysfs: onto vfio-pci for a VM, and back afterwards.

Each call converges instead of replaying a script: it reads the function's driver and override, makes the one
write that state calls for (``step_to_vfio``, ``step_to_driver``: pure, so each decision is tested on its own),
and reads again, until the function is where it should be. So a call repeated is a no-op, and a call after a
crash at any point, or after another process moved the function meanwhile, finishes the job from where it is.

A sysfs write can block in the kernel indefinitely (nvidia's unbind waits for every process using the GPU), so
each one runs in a thread and the whole call is bounded by ``timeout``; a write that does not finish is reported
naming the function and the driver, and left to the kernel, which may still complete it. ``writes_settled`` waits
for such a write: whoever gives the function back must, or the kernel finishes the unbind after the function was
put back, and leaves it on no driver.
"""

import asyncio
import contextlib
import functools
import threading
from collections.abc import Callable
from pathlib import Path

import msgspec

from libs.devices.errors import PciError
from libs.devices.pci.sysfs import PciSysfs

VFIO_PCI = "vfio-pci"
GROUP_POLL_INTERVAL = 0.02
"""How often ``wait_for_group_node`` looks: the kernel announces no VFIO group node."""
_MAX_STEPS = 8
"""More writes than any path to the goal takes (override, unbind, probe; twice with a fallback override)."""


class Binding(msgspec.Struct, frozen=True):
    """What decides the next write: the function's driver and its driver override, None when unset."""

    driver: str | None
    override: str | None


class SetOverride(msgspec.Struct, frozen=True):
    driver: str | None


class Unbind(msgspec.Struct, frozen=True):
    driver: str


class Probe(msgspec.Struct, frozen=True):
    pass


Step = SetOverride | Unbind | Probe


def step_to_vfio(now: Binding) -> Step | None:
    """The override first, so that nothing but vfio-pci can take the function once it is unbound. The override
    stays after the bind: a rescan must not hand the function back to its old driver under the VM."""
    if now.driver == VFIO_PCI:
        return None
    if now.override != VFIO_PCI:
        return SetOverride(VFIO_PCI)
    if now.driver is not None:
        return Unbind(now.driver)
    return Probe()


def step_to_driver(now: Binding, driver: str, *, override: bool) -> Step | None:
    """Back to ``driver`` by the kernel's own choice (``override=False``); where that picks another driver, by an
    override naming it, cleared once the function is bound: the function is left as the kernel would have it,
    with nothing of gpudra's outliving the VM."""
    if now.driver == driver:
        return SetOverride(None) if now.override is not None else None
    wanted = driver if override else None
    if now.override != wanted:
        return SetOverride(wanted)
    if now.driver is not None:
        return Unbind(now.driver)
    return Probe()


async def bind_to_vfio(sysfs: PciSysfs, bdf: str, *, timeout: float) -> None:
    """Leaves the function bound to vfio-pci (with the override vfio-pci), or raises ``PciError``."""
    await _converge(sysfs, bdf, VFIO_PCI, lambda now, _: step_to_vfio(now), timeout, fallback=False)


async def restore_driver(sysfs: PciSysfs, bdf: str, driver: str, *, timeout: float) -> None:
    """Leaves the function bound to ``driver`` with no override, or raises ``PciError``."""
    sysfs.checked_driver(driver)
    await _converge(
        sysfs, bdf, driver, lambda now, fallback: step_to_driver(now, driver, override=fallback), timeout, fallback=True
    )


async def writes_settled(sysfs: PciSysfs, bdf: str, *, timeout: float) -> bool:
    """Whether no write to the function is still in the kernel, waiting up to ``timeout`` for those that are."""
    pending = list(_IN_FLIGHT.get((str(sysfs.sys_root), bdf), ()))
    if not pending:
        return True
    _, still = await asyncio.wait(pending, timeout=timeout)
    return not still


async def wait_for_group_node(sysfs: PciSysfs, group: int, *, timeout: float) -> None:
    """Returns once ``/dev/vfio/<group>`` exists, which is when the group can be handed to a VM."""
    node = sysfs.group_node(group)
    try:
        async with asyncio.timeout(timeout):
            while True:
                if _exists(node):
                    return
                await asyncio.sleep(GROUP_POLL_INTERVAL)
    except TimeoutError:
        drivers = ", ".join(f"{bdf} on {sysfs.driver_of(bdf) or 'no driver'}" for bdf in sysfs.group_members(group))
        raise PciError(
            sysfs.node, f"iommu group {group}", f"{node} did not appear in {timeout:g}s; its functions: {drivers}"
        ) from None


Planner = Callable[[Binding, bool], Step | None]


async def _converge(sysfs: PciSysfs, bdf: str, goal: str, plan: Planner, timeout: float, *, fallback: bool) -> None:
    """Writes what ``plan`` says until it says nothing is left. A probe that misses ``goal`` switches the plan
    to its fallback where it has one; a step the state still calls for right after it was made did not take."""
    use_fallback = False
    last: Step | None = None
    refused: PciError | None = None
    try:
        async with asyncio.timeout(timeout):
            for _ in range(_MAX_STEPS):
                now = read_binding(sysfs, bdf)
                if isinstance(last, Probe) and now.driver != goal:
                    if refused or not fallback or use_fallback:
                        raise refused or PciError(
                            sysfs.node, bdf, f"the kernel's probe bound it to {now.driver or 'no driver'}, not {goal}"
                        )
                    use_fallback = True
                step = plan(now, use_fallback)
                if step is None:
                    return
                if step == last:
                    raise refused or PciError(sysfs.node, bdf, f"{_describe(step)} did not take effect")
                last, refused = step, None
                try:
                    await _in_own_thread(functools.partial(apply, sysfs, bdf, step), (str(sysfs.sys_root), bdf))
                except PciError as error:  # the kernel refused: read again, the function may have moved meanwhile
                    refused = error
    except TimeoutError:
        assert last is not None  # the writes are the only waits: ``last`` is the one that did not finish
        why = ", likely because a process still uses it" if isinstance(last, Unbind) else ""
        raise PciError(sysfs.node, bdf, f"{_describe(last)} did not finish in {timeout:g}s{why}") from None
    raise PciError(sysfs.node, bdf, f"did not settle on {goal} in {_MAX_STEPS} writes")


def read_binding(sysfs: PciSysfs, bdf: str) -> Binding:
    return Binding(driver=sysfs.driver_of(bdf), override=sysfs.override_of(bdf))


def apply(sysfs: PciSysfs, bdf: str, step: Step) -> None:
    """Makes one step's write (blocking, for as long as the kernel takes)."""
    match step:
        case SetOverride(driver):
            sysfs.set_override(bdf, driver)
        case Unbind(driver):
            sysfs.unbind(bdf, driver)
        case Probe():
            sysfs.probe(bdf)


def _describe(step: Step) -> str:
    match step:
        case SetOverride(driver):
            return f"setting driver_override to {driver}" if driver else "clearing driver_override"
        case Unbind(driver):
            return f"the unbind from {driver}"
        case Probe():
            return "the kernel's probe"


_IN_FLIGHT: dict[tuple[str, str], set[asyncio.Future[None]]] = {}
"""(sysfs root, bdf) → the writes to that function still in the kernel, each done when its thread returns."""


async def _in_own_thread(call: Callable[[], None], key: tuple[str, str]) -> None:
    """A write blocked in the kernel cannot be cancelled: in a daemon thread of its own it holds neither a
    worker of the loop's executor nor the process's exit while it waits, however long that is. It stays in
    ``_IN_FLIGHT`` until it returns, whether or not anyone still waits for it."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    finished: asyncio.Future[None] = loop.create_future()
    _IN_FLIGHT.setdefault(key, set()).add(finished)
    finished.add_done_callback(lambda future: _forget(key, future))

    def run() -> None:
        error: Exception | None = None
        try:
            call()
        except Exception as raised:
            error = raised
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            loop.call_soon_threadsafe(_settle, done, error)
            loop.call_soon_threadsafe(_settle, finished, None)

    threading.Thread(target=run, name="pci-sysfs-write", daemon=True).start()
    await done


def _forget(key: tuple[str, str], future: asyncio.Future[None]) -> None:
    writes = _IN_FLIGHT.get(key)
    if writes is not None:
        writes.discard(future)
        if not writes:
            del _IN_FLIGHT[key]


def _settle(done: asyncio.Future[None], error: Exception | None) -> None:
    if done.done():  # cancelled: the caller's time ran out
        return
    if error is None:
        done.set_result(None)
    else:
        done.set_exception(error)


def _exists(path: Path) -> bool:
    """One stat: not worth a thread hop, /dev is in memory."""
    return path.exists()
