"""What a claim's status says about its devices (KEP-4817): the ``status.devices`` entries this driver owns.

After a prepare each of the claim's devices gets an entry with a ``Ready`` condition and ``data`` that workloads
and tools want (the GPU's UUID, the MIG placement and profile, the CDI device ids, the share id); a prepare that
fails gets ``Ready=False`` and ``PrepareFailed`` with the reason; a device the health controller marks
unhealthy turns ``Ready`` false with the reason, and back when it recovers; an unprepare removes the entries.

Entries of other drivers are never touched: this driver's entries are replaced in the claim as last seen (read by
the prepare, or returned by the last write) and the status is written back with its ``resourceVersion``; a
conflict reads the claim again. A condition keeps its ``lastTransitionTime`` while its status stays the same.

Writes go through a queue, off the kubelet's path and ``DELAY`` after the change: a claim's newer wish replaces
its older one, so a prepare undone before its entries were written costs no write at all. The entries are a
report, not a source of truth; one lost to a crash is written again by the next change.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from libs.claims.allocation import AllocatedClaim
from libs.claims.problems import ClaimProblem
from libs.events.catalogue import ClaimRef
from libs.kube import RESOURCE_CLAIMS, Conflict, KubeApi, KubeError, NotFound, kube_time
from libs.slices.capacity import rendered
from services.claim_preparation.devices import MigTarget, VfioTarget, lock_key
from services.claim_preparation.record import PREPARE_COMPLETED, ClaimRecord, PlannedDevice, SharePlan

log = logging.getLogger(__name__)

READY = "Ready"
PREPARE_FAILED = "PrepareFailed"
DELAY = 0.1
"""Seconds a wish waits before it is written; a newer wish for the same claim replaces it meanwhile."""
RETRY_SECONDS = 2.0
CONFLICT_ATTEMPTS = 8
MAX_MESSAGE = 1024

Entry = dict[str, Any]


# --- the entries (pure) ------------------------------------------------------------------------------------


def condition(kind: str, ready: bool, reason: str, message: str) -> dict[str, str]:
    """A ``metav1.Condition`` but for ``lastTransitionTime``, which ``merged`` sets."""
    return {"type": kind, "status": "True" if ready else "False", "reason": reason, "message": message[:MAX_MESSAGE]}


def _key(driver: str, pool: str, device: str, share_id: str | None) -> Entry:
    key: Entry = {"driver": driver, "pool": pool, "device": device}
    if share_id:
        key["shareID"] = share_id
    return key


def _data(device: PlannedDevice, cdi_device_ids: Sequence[str], share: SharePlan | None) -> Entry:
    target = device.target
    data: Entry = {"uuid": target.uuid, "cdiDeviceIDs": list(cdi_device_ids)}
    if isinstance(target, VfioTarget):
        data["vm"] = {"pciBusID": target.pci_bus_id, "iommuGroup": target.iommu_group}
    if isinstance(target, MigTarget):
        data["mig"] = {
            "profile": target.profile,
            "parent": lock_key(target),
            "parentUUID": target.parent_uuid,
            "placementStart": target.placement_start,
            "gpuInstance": target.gi_id,
            "computeInstance": target.ci_id,
            "createdForClaim": target.dynamic,
        }
    if device.share_id:
        data["shareID"] = device.share_id
        data["consumedCapacity"] = rendered(device.consumed)
    if device.share_id and share is not None:
        data["mpsClient"] = {
            "pinnedDeviceMemoryLimitBytes": share.memory_limit,
            "activeThreadPercentage": share.active_thread_percentage,
        }
    if device.admin_access:
        data["adminAccess"] = True
    return data


def prepared_entries(driver: str, record: ClaimRecord, unhealthy: Mapping[str, str]) -> list[Entry]:
    """One entry per prepared device; ``unhealthy``: device name (a GPU or a MIG device) → why, from health."""
    planned = {(device.target.name, device.share_id): device for device in record.devices}
    share = next((plan for plan in record.sharing if isinstance(plan, SharePlan)), None)
    entries = []
    for prepared in record.prepared:
        device = planned.get((prepared.device, prepared.share_id))
        if device is None:
            continue
        target = device.target
        why = unhealthy.get(target.name) or unhealthy.get(lock_key(target))
        ready = condition(READY, True, "Prepared", f"prepared on node {prepared.pool}")
        if why is not None:
            ready = condition(READY, False, "DeviceUnhealthy", why)
        entries.append(
            _key(driver, prepared.pool, prepared.device, prepared.share_id)
            | {"conditions": [ready], "data": _data(device, prepared.cdi_device_ids, share)}
        )
    return entries


def failed_entries(driver: str, claim: AllocatedClaim, problem: ClaimProblem) -> list[Entry]:
    message = f"claim {claim.ref}: {problem.problem}"
    conditions = [
        condition(READY, False, problem.reason, message),
        condition(PREPARE_FAILED, True, problem.reason, message),
    ]
    return [_key(driver, r.pool, r.device, r.share_id) | {"conditions": conditions} for r in claim.results]


def _identity(entry: Mapping[str, Any]) -> tuple[str, str, str, str]:
    return (str(entry.get("driver")), str(entry.get("pool")), str(entry.get("device")), str(entry.get("shareID", "")))


def merged(current: Sequence[Mapping[str, Any]], driver: str, entries: Sequence[Entry], now: str) -> list[Entry]:
    """``current`` with this driver's entries replaced by ``entries``; a condition keeps the time it last changed
    while its status stays the same, and gets ``now`` when it changes."""
    before = {_identity(entry): entry for entry in current if entry.get("driver") == driver}
    result = [dict(entry) for entry in current if entry.get("driver") != driver]
    for entry in entries:
        old = {c.get("type"): c for c in before.get(_identity(entry), {}).get("conditions") or ()}
        conditions = []
        for new in entry.get("conditions") or ():
            previous = old.get(new["type"]) or {}
            kept = previous.get("status") == new["status"] and previous.get("lastTransitionTime")
            conditions.append(new | {"lastTransitionTime": previous["lastTransitionTime"] if kept else now})
        result.append(entry | {"conditions": conditions})
    return result


# --- writing them -----------------------------------------------------------------------------------------


class DeviceStatusWriter:
    """Keeps each claim's entries as last wished, one write per claim at a time, retried until it lands."""

    def __init__(self, kube: KubeApi, driver: str, *, delay: float = DELAY) -> None:
        self._kube = kube
        self._driver = driver
        self._delay = delay
        self._wished: dict[str, tuple[ClaimRef, list[Entry]]] = {}
        self._written: set[str] = set()
        """Claims whose entries may be in their status: only those need a removal."""
        self._known: dict[str, dict[str, Any]] = {}
        """The claim as last read or written here: a write against it needs no read first, and a stale one is
        refused by its resourceVersion (then the claim is read again)."""
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def wish(self, ref: ClaimRef, entries: list[Entry]) -> None:
        """The claim's entries should become ``entries`` (empty: none of this driver's)."""
        if not entries and ref.uid not in self._written:
            self._wished.pop(ref.uid, None)  # nothing of ours is there: nothing to remove
            self._known.pop(ref.uid, None)
            return
        self._wished[ref.uid] = (ref, entries)
        self._wake.set()

    def seen(self, claim: dict[str, Any]) -> None:
        """The claim as the prepare read it: the first write of its status goes against it."""
        uid = (claim.get("metadata") or {}).get("uid")
        if isinstance(uid, str):
            self._known[uid] = claim

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="device status writer")

    async def stop(self, *, timeout: float = 5.0) -> None:
        """Write what is still wished (bounded: the API may be away), then stop."""
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self.flush()

    async def flush(self) -> None:
        """Write every wish now (tests, and the last round at stop); failures stay wished."""
        wished, self._wished = self._wished, {}
        outcomes = await asyncio.gather(*(self._write(ref, entries) for ref, entries in wished.values()))
        for (uid, wish), written in zip(wished.items(), outcomes, strict=True):
            if not written:
                self._wished.setdefault(uid, wish)

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await asyncio.sleep(self._delay)  # a newer wish for the same claim replaces this one meanwhile
            await self.flush()
            if self._wished:  # some did not land: again after a while, unless a new wish comes first
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(RETRY_SECONDS):
                        await self._wake.wait()
                self._wake.set()

    async def _write(self, ref: ClaimRef, entries: list[Entry]) -> bool:
        """True when the claim's status holds ``entries`` (or the claim is gone); False to try again later."""
        now = kube_time(dt.datetime.now(dt.UTC))
        try:
            for _ in range(CONFLICT_ATTEMPTS):
                if await self._write_once(ref, entries, now):
                    break
            else:
                return False
        except NotFound:
            pass
        except KubeError as exc:
            log.warning("cannot write the device status of claim %s: %s", ref, exc, extra={"claim": str(ref)})
            return False
        if entries:
            self._written.add(ref.uid)
        else:
            self._written.discard(ref.uid)
            self._known.pop(ref.uid, None)
        return True

    async def _write_once(self, ref: ClaimRef, entries: list[Entry], now: str) -> bool:
        obj = self._known.pop(ref.uid, None) or await self._kube.get(RESOURCE_CLAIMS, ref.name, ref.namespace)
        if (obj.get("metadata") or {}).get("uid") != ref.uid:
            return True  # another claim of the same name: ours is gone
        status = dict(obj.get("status") or {})
        current = list(status.get("devices") or [])
        devices = merged(current, self._driver, entries, now)
        if devices == current:
            self._known[ref.uid] = obj
            return True
        if devices:
            status["devices"] = devices
        else:
            status.pop("devices", None)
        try:
            self._known[ref.uid] = await self._kube.update_status(RESOURCE_CLAIMS, obj | {"status": status})
        except Conflict:
            return False  # the claim changed since: the next attempt reads it afresh
        return True


def completed(records: Iterable[ClaimRecord]) -> list[ClaimRecord]:
    return [record for record in records if record.state == PREPARE_COMPLETED]


def holds(record: ClaimRecord, device: str) -> bool:
    """Whether the record has ``device`` (a GPU also stands for its MIG devices)."""
    return any(d.target.name == device or lock_key(d.target) == device for d in record.devices)
