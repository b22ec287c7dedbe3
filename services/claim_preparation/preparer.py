"""The prepare and unprepare procedures: a sequence of timed phases over the pure plan, undone on failure.

Prepare of one claim::

    claim lock ─ already completed? answer from the checkpoint
               ─ half prepared (or half unprepared)? roll it back first
    lookup     ─ read the ResourceClaim (UID, node, driver checks) and the node's devices
    config     ─ plan: devices, configs, sharing (pure; any problem fails here, nothing touched)
    wait       ─ lock the claim's GPUs (sorted), refuse devices another claim holds
    checkpoint ─ PrepareStarted with the plan, if it changes the GPUs: from here a crash is undone from the record
    apply      ─ create dynamic MIG devices, set up sharing
    cdi        ─ write the claim's spec
    checkpoint ─ PrepareCompleted with the answer and the id of its event
    announce   ─ ClaimPrepared (see outbox.py: owed until JetStream confirms it, even across a crash)

Any failure after ``PrepareStarted`` undoes what the record names (spec, sharing, created MIG devices) and drops
the record; if undoing fails too, the record stays and the next prepare, the periodic cleanup or the next
start tries again. Unprepare marks the record ``UnprepareStarted`` (with the id of its ``ClaimUnprepared``),
undoes the same way, announces, and drops the record. Every step of undoing is idempotent, which is what makes
both procedures safe to repeat and to interrupt.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import AsyncExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import msgspec

from libs.cdi import CdiError, ContainerEdits, Spec, SpecDir, claim_spec_name, claim_spec_prefix
from libs.cdi.nvidia import NodePaths
from libs.claims.allocation import AllocatedClaim, check_ref, check_uid, read_allocation
from libs.devices import DeviceBackend
from libs.devices.errors import DeviceError, StateError
from libs.devices.model import Inventory
from libs.events.catalogue import (
    ClaimFailed,
    ClaimPrepared,
    ClaimRef,
    ClaimUnprepared,
    DeviceHealthChanged,
    PreparedDevice,
)
from libs.events.envelope import new_event_id
from libs.kube import RESOURCE_CLAIMS, KubeApi, KubeError, NotFound
from libs.slices.passthrough import NO_PASSTHROUGH, PassthroughGpus
from services.claim_preparation import metrics, mig
from services.claim_preparation.cdi import claim_spec, prepared_devices
from services.claim_preparation.checkpoint import CheckpointError, CheckpointStore
from services.claim_preparation.device_status import (
    DeviceStatusWriter,
    completed,
    failed_entries,
    holds,
    prepared_entries,
)
from services.claim_preparation.devices import Holder, MigTarget, check_free, kind_of, lock_key, minor_of
from services.claim_preparation.errors import (
    ApiUnavailable,
    CdiFailure,
    CheckpointFailure,
    ClaimNotFound,
    ClaimProblem,
    DeviceFailure,
    RollbackFailed,
)
from services.claim_preparation.locks import KeyedLocks
from services.claim_preparation.mps import MpsDaemons, MpsError
from services.claim_preparation.outbox import Outbox
from services.claim_preparation.passthrough import read_endpoints, vfio_groups
from services.claim_preparation.plan import ClaimPlan, plan_claim, with_passthrough
from services.claim_preparation.record import (
    PREPARE_COMPLETED,
    PREPARE_STARTED,
    UNPREPARE_STARTED,
    ClaimRecord,
    MpsPlan,
    PlannedDevice,
    SharePlan,
    SharingPlan,
)
from services.claim_preparation.shares import DAEMONS, check_fits
from services.claim_preparation.sharing import DEFAULT_VFIO_TIMEOUT, strategy_for
from services.claim_preparation.timing import PhaseClock

log = logging.getLogger(__name__)

_BACKEND_ERRORS = (DeviceError, StateError, MpsError, OSError)


Done = tuple[ClaimRef, tuple[PreparedDevice, ...], bool]
"""What a procedure did: the claim (named as recorded), its devices, and whether anything changed."""
Procedure = Callable[[ClaimRef, PhaseClock], Awaitable[Done]]
Operation = Literal["prepare", "unprepare"]


def _check_uid_only(ref: ClaimRef) -> None:
    """Unprepare needs only a safe UID: the record names the claim."""
    check_uid(ref.uid)


class UnexpectedError(ClaimProblem):
    """A bug or an error nobody foresaw; still a per-claim error, never a crashed call."""


@dataclass(frozen=True, kw_only=True)
class Parts:
    """What the preparer works with; the service builds it from settings, tests from temporary directories."""

    driver: str
    node: str
    kube: KubeApi
    backend: DeviceBackend
    checkpoint: CheckpointStore
    specs: SpecDir
    paths: NodePaths
    daemons: MpsDaemons
    mps_root: Path
    boot_id: str
    outbox: Outbox
    dynamic_mig: bool = False
    """Create MIG devices a claim names that do not exist yet (discovery's ``mig_mode`` dynamic)."""
    device_status: DeviceStatusWriter | None = None
    """Reports each claim's devices in its ``status.devices`` (None: not at all)."""
    passthrough: PassthroughGpus = NO_PASSTHROUGH
    """The GPUs this node offers to VMs (``passthrough_gpus``, as discovery publishes them)."""
    vfio_timeout: float = DEFAULT_VFIO_TIMEOUT
    """The bound on each sysfs step of a passthrough (an unbind, the wait for the group's node)."""


@dataclass(frozen=True)
class Outcome:
    """One claim's result: its devices or its error, the phase timings, and whether anything changed now."""

    claim: ClaimRef
    devices: tuple[PreparedDevice, ...] = ()
    error: ClaimProblem | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)
    changed: bool = False

    @property
    def message(self) -> str:
        return f"claim {self.claim}: {self.error.problem}" if self.error else ""


@contextmanager
def failures_as(kind: type[ClaimProblem], doing: str) -> Iterator[None]:
    """Turn a backend, file or CDI error into the claim problem ``kind``, saying what was being done."""
    try:
        yield
    except ClaimProblem:
        raise
    except CdiError as exc:
        raise CdiFailure(f"{doing}: {exc}") from exc
    except CheckpointError as exc:
        raise CheckpointFailure(f"{doing}: {exc}") from exc
    except _BACKEND_ERRORS as exc:
        raise kind(f"{doing}: {exc}") from exc


class Preparer:
    def __init__(self, parts: Parts) -> None:
        self.parts = parts
        self._records: dict[str, ClaimRecord] = {}
        self._newer: set[str] = set()
        self._claims = KeyedLocks()
        self._devices = KeyedLocks()
        self._unhealthy: dict[str, str] = {}
        """Device → why the health controller says it is unhealthy (its ``DeviceHealthChanged``)."""

    # --- the two procedures -------------------------------------------------------------------------------

    async def prepare(self, ref: ClaimRef) -> Outcome:
        return await self._guarded("prepare", ref, check_ref, self._prepare)

    async def unprepare(self, ref: ClaimRef) -> Outcome:
        return await self._guarded("unprepare", ref, _check_uid_only, self._unprepare)

    async def _guarded(
        self,
        operation: Operation,
        ref: ClaimRef,
        check: Callable[[ClaimRef], object],
        work: Procedure,
    ) -> Outcome:
        """Run one procedure under the claim's lock; every failure becomes the claim's error, never an exception."""
        clock = PhaseClock()
        try:
            check(ref)
            async with self._claims.hold([ref.uid]):
                ref, devices, changed = await work(ref, clock)
        except ClaimProblem as exc:
            return await self._failed(ref, exc, clock, operation)
        except Exception as exc:
            log.exception("claim %s: %s failed unexpectedly", ref, operation, extra={"claim": str(ref)})
            return await self._failed(ref, UnexpectedError(f"unexpected error: {exc!r}"), clock, operation)
        outcome = Outcome(ref, devices=devices, timings_ms=clock.timings_ms(), changed=changed)
        if changed or operation == "unprepare":  # an unprepare also clears what a failed prepare reported
            self._report(operation, ref)
        if changed:
            log.info(
                "claim %s: %sd %s",
                ref,
                operation,
                ", ".join(d.device for d in devices),
                extra={"claim": str(ref), "timings_ms": outcome.timings_ms},
            )
        return outcome

    async def _failed(self, ref: ClaimRef, problem: ClaimProblem, clock: PhaseClock, operation: Operation) -> Outcome:
        outcome = Outcome(ref, error=problem, timings_ms=clock.timings_ms())
        log.warning("%s", outcome.message, extra={"claim": str(ref), "operation": operation, "reason": problem.reason})
        failed = ClaimFailed(
            node=self.parts.node,
            claim=ref,
            operation=operation,
            error=outcome.message,
            reason=problem.reason,
            timings_ms=outcome.timings_ms,
        )
        await self.parts.outbox.tell(failed)
        return outcome

    async def _prepare(self, ref: ClaimRef, clock: PhaseClock) -> Done:
        self._refuse_newer(ref.uid)
        record = self._records.get(ref.uid)
        if record is not None and record.state == PREPARE_COMPLETED:
            return ref, record.prepared, False
        if record is not None:
            log.info("claim %s: rolling back an unfinished %s first", ref, record.state, extra={"claim": str(ref)})
            await self._take_apart(record, clock)
        with clock.phase("lookup"):
            claim = await self._read_claim(ref)
        try:
            return await self._prepare_read(claim, clock)
        except ClaimProblem as problem:
            if self.parts.device_status is not None:
                self.parts.device_status.wish(ref, failed_entries(self.parts.driver, claim, problem))
            raise

    async def _prepare_read(self, claim: AllocatedClaim, clock: PhaseClock) -> Done:
        ref = claim.ref
        with clock.phase("lookup"):
            inventory = await self._inventory()
        with clock.phase("config"):
            plan = plan_claim(
                claim,
                inventory,
                self.parts.mps_root,
                dynamic_mig=self.parts.dynamic_mig,
                passthrough=self.parts.passthrough,
            )
        async with AsyncExitStack() as stack:
            with clock.phase("wait"):
                await stack.enter_async_context(self._devices.hold(plan.lock_keys, self._waiting(ref)))
            self._check_room(ref, plan, inventory)
            plan = await self._with_passthrough(claim, plan, inventory)
            started = self._started(claim, plan.devices, plan.sharing)
            if plan.sharing or _created_mig_devices(started):
                self._save(started, clock)
            try:
                completed = await self._set_up(started, clock)
            except Exception as exc:
                raise await self._rolled_back(started, exc, clock) from exc
        with clock.phase("announce"):
            prepared = ClaimPrepared(
                node=self.parts.node, claim=ref, devices=list(completed.prepared), timings_ms=clock.timings_ms()
            )
            await self.parts.outbox.send_ahead(prepared, completed.event_id)
        return ref, completed.prepared, True

    async def _unprepare(self, ref: ClaimRef, clock: PhaseClock) -> Done:
        self._refuse_newer(ref.uid)
        record = self._records.get(ref.uid)
        if record is None:
            # Nothing recorded: done already. A spec left by a record lost to corruption goes too.
            with clock.phase("cdi"), failures_as(CdiFailure, "removing a leftover CDI spec"):
                self.parts.specs.remove(claim_spec_name(self.parts.driver, ref.uid))
            return ref, (), False
        await self._take_apart(record, clock)
        return record.ref, (), True

    # --- device status in the claim ---------------------------------------------------------------------

    def _report(self, operation: Operation, ref: ClaimRef) -> None:
        """The claim's entries as they now are: its devices after a prepare, none after an unprepare."""
        if self.parts.device_status is None:
            return
        record = self._records.get(ref.uid) if operation == "prepare" else None
        entries = prepared_entries(self.parts.driver, record, self._unhealthy) if record else []
        self.parts.device_status.wish(ref, entries)

    def device_health(self, event: DeviceHealthChanged, at: float) -> None:
        """The health controller's word on a device: the Ready condition of every claim holding it follows."""
        if event.health == "Healthy":
            changed = self._unhealthy.pop(event.device, None) is not None
        else:
            reason = event.reason or f"the health controller says {event.health}"
            changed = self._unhealthy.get(event.device) != reason
            self._unhealthy[event.device] = reason
        if not changed or self.parts.device_status is None:
            return
        for record in completed(self._records.values()):
            if holds(record, event.device):
                self.parts.device_status.wish(record.ref, prepared_entries(self.parts.driver, record, self._unhealthy))

    @staticmethod
    def _waiting(ref: ClaimRef) -> Callable[[str], None]:
        def waiting(key: str) -> None:
            metrics.LOCK_WAITS.inc()
            log.info("claim %s: waits for %s, which another claim is working on", ref, key, extra={"device": key})

        return waiting

    # --- prepare's steps ------------------------------------------------------------------------------------

    def _refuse_newer(self, uid: str) -> None:
        if uid in self._newer:
            raise CheckpointFailure("its checkpoint record was written by a newer gpudra; upgrade this one")

    async def _read_claim(self, ref: ClaimRef) -> AllocatedClaim:
        what = f"ResourceClaim {ref.namespace}/{ref.name}"
        try:
            obj = await self.parts.kube.get(RESOURCE_CLAIMS, ref.name, ref.namespace)
        except NotFound:
            raise ClaimNotFound(f"{what} does not exist") from None
        except KubeError as exc:
            raise ApiUnavailable(f"cannot read {what}: {exc}") from exc
        claim = read_allocation(obj, ref, driver=self.parts.driver, node=self.parts.node)
        if self.parts.device_status is not None:
            self.parts.device_status.seen(obj)
        return claim

    async def _with_passthrough(self, claim: AllocatedClaim, plan: ClaimPlan, inventory: Inventory) -> ClaimPlan:
        """The plan with its VM GPUs' IOMMU groups as they are now, read under the GPUs' locks so no other
        prepare or unprepare moves them meanwhile."""
        groups = vfio_groups(claim, inventory)
        if not groups:
            return plan
        with failures_as(DeviceFailure, "reading the IOMMU groups of the GPUs for VMs"):
            endpoints = await asyncio.to_thread(read_endpoints, self.parts.backend.pci(), groups)
        return with_passthrough(plan, endpoints)

    async def _inventory(self) -> Inventory:
        with failures_as(DeviceFailure, "reading the node's devices"):
            return await self.parts.backend.inventory()

    def _started(
        self, claim: AllocatedClaim, devices: Sequence[PlannedDevice], sharing: Sequence[SharingPlan]
    ) -> ClaimRecord:
        ref = claim.ref
        return ClaimRecord(
            uid=ref.uid,
            namespace=ref.namespace,
            name=ref.name,
            state=PREPARE_STARTED,
            boot_id=self.parts.boot_id,
            started_at=time.time(),
            devices=tuple(devices),
            sharing=tuple(sharing),
            cdi_spec=claim_spec_name(self.parts.driver, ref.uid),
        )

    async def _set_up(self, record: ClaimRecord, clock: PhaseClock) -> ClaimRecord:
        with clock.phase("apply"):
            devices = await self._create_mig_devices(record.devices)
            edits = await self._apply_sharing(record.uid, record.sharing, devices)
        spec = claim_spec(self.parts.driver, record.uid, devices, edits, self.parts.paths)
        event_id, since = self.parts.outbox.expect()
        completed = msgspec.structs.replace(
            record,
            state=PREPARE_COMPLETED,
            completed_at=since,
            devices=devices,
            prepared=prepared_devices(self.parts.driver, record.uid, devices),
            event_id=event_id,
        )
        try:
            self._write_spec_and_record(spec, completed, clock)
        except BaseException:
            self.parts.outbox.cancel(event_id)
            raise
        self._remember(completed)
        return completed

    def _write_spec_and_record(self, spec: Spec, completed: ClaimRecord, clock: PhaseClock) -> None:
        """The two writes of a prepare, the spec first, so that a record never names a spec that is not there.

        On the event loop: neither is fsynced (see checkpoint.py), so each is a few system calls, cheaper than
        the hand-off to a worker thread and back."""
        with clock.phase("cdi"), failures_as(CdiFailure, "writing the CDI spec"):
            missing = self.parts.paths.missing(spec)
            if missing:
                raise CdiFailure(f"device nodes {', '.join(missing)} do not exist on this node (is the driver loaded?)")
            self.parts.specs.write(completed.cdi_spec, spec)
        with clock.phase("checkpoint"), failures_as(CheckpointFailure, "writing the checkpoint"):
            self.parts.checkpoint.save(completed)

    async def _create_mig_devices(self, devices: Sequence[PlannedDevice]) -> tuple[PlannedDevice, ...]:
        """Create the claim's dynamic MIG devices all at once, each named once however many requests share it.

        Their placements were planned not to overlap, so they are independent: a claim of 16 waits for the
        slowest, not for the sum. A failure is raised only once every attempt has settled, so the rollback
        (which destroys by name, from the record) meets no creation still under way.
        """
        wanted = {d.target.name: d.target for d in devices if isinstance(d.target, MigTarget) and d.target.dynamic}
        outcomes = await asyncio.gather(*map(self._create_mig_device, wanted.values()), return_exceptions=True)
        failure = next((outcome for outcome in outcomes if isinstance(outcome, BaseException)), None)
        if failure is not None:
            raise failure
        created = {
            name: outcome for name, outcome in zip(wanted, outcomes, strict=True) if isinstance(outcome, MigTarget)
        }
        return tuple(msgspec.structs.replace(d, target=created.get(d.target.name, d.target)) for d in devices)

    async def _create_mig_device(self, target: MigTarget) -> MigTarget:
        with failures_as(DeviceFailure, f"creating MIG device {target.name}"):
            return await mig.create(self.parts.backend, target)

    async def _apply_sharing(
        self, uid: str, plans: Sequence[SharingPlan], devices: Sequence[PlannedDevice]
    ) -> dict[str, ContainerEdits]:
        edits: dict[str, ContainerEdits] = {}
        for plan in plans:
            members = [d.target for d in devices if d.group == plan.group]
            by_minor = {t.name: minor_of(t) for t in members}
            elsewhere = self._shared_elsewhere(plan, uid)
            strategy = strategy_for(
                plan, self.parts.backend, self.parts.daemons, by_minor, elsewhere, vfio_timeout=self.parts.vfio_timeout
            )
            with failures_as(DeviceFailure, f"setting up {type(plan).__name__.removesuffix('Plan')} sharing"):
                await strategy.apply({t.name: t.uuid for t in members})
            edits[plan.group] = strategy.edits()
        return edits

    async def _rolled_back(self, record: ClaimRecord, cause: Exception, clock: PhaseClock) -> ClaimProblem:
        """Undo a failed prepare; the problem to report (which notes a failed undo too)."""
        problem = cause if isinstance(cause, ClaimProblem) else UnexpectedError(f"unexpected error: {cause!r}")
        if not isinstance(cause, ClaimProblem):
            log.error("claim %s: prepare failed unexpectedly", record.ref, exc_info=cause)
        try:
            await self._undo(record, clock)
        except RollbackFailed as failed:
            return type(problem)(f"{problem.problem}; rolling back failed too: {failed.problem}")
        return problem

    # --- undoing --------------------------------------------------------------------------------------------

    async def _take_apart(self, record: ClaimRecord, clock: PhaseClock) -> None:
        """Undo a record under its devices' locks, marking a completed one first so a crash cannot revive it."""
        keys = sorted({lock_key(device.target) for device in record.devices})
        async with AsyncExitStack() as stack:
            with clock.phase("wait"):
                await stack.enter_async_context(self._devices.hold(keys, self._waiting(record.ref)))
            if record.state == PREPARE_COMPLETED:
                # Its ClaimPrepared, if unconfirmed, goes to the outbox file: no start announces an unprepare's.
                with failures_as(CheckpointFailure, "keeping the unconfirmed ClaimPrepared event"):
                    await self.parts.outbox.secure(self._prepared_event(record), record.event_id)
                record = record.with_state(UNPREPARE_STARTED, new_event_id())
                self._save(record, clock)
            await self._undo(record, clock)

    async def _undo(self, record: ClaimRecord, clock: PhaseClock) -> None:
        """Remove the spec, undo sharing, destroy created MIG devices, drop the record; all idempotent."""
        errors: list[str] = []
        with clock.phase("cdi"):
            try:
                self.parts.specs.remove(record.cdi_spec)
            except CdiError as exc:
                errors.append(f"removing the CDI spec: {exc}")
        with clock.phase("apply"):
            for plan in reversed(record.sharing):
                strategy = strategy_for(
                    plan, self.parts.backend, self.parts.daemons, {}, vfio_timeout=self.parts.vfio_timeout
                )
                elsewhere = self._shared_elsewhere(plan, record.uid)
                await _attempt(errors, f"undoing {type(plan).__name__} {plan.group}", strategy.undo(elsewhere))
            created = _created_mig_devices(record)  # independent, like their creation: all at once
            await asyncio.gather(
                *(
                    _attempt(errors, f"destroying MIG device {name}", mig.destroy(self.parts.backend, name))
                    for name in created
                )
            )
        if errors:
            raise RollbackFailed("; ".join(errors))
        if record.state == UNPREPARE_STARTED:
            await self._announce_unprepared(record, clock)
        self._drop(record, clock)

    async def _announce_unprepared(self, record: ClaimRecord, clock: PhaseClock) -> None:
        """Send ``ClaimUnprepared`` while the record still owes it; if the bus refuses, the outbox file must hold
        the event before the record goes."""
        with clock.phase("announce"):
            event = ClaimUnprepared(node=self.parts.node, claim=record.ref, timings_ms=clock.timings_ms())
            # Only UnprepareStarted owes this event; a completed record's id is its ClaimPrepared's.
            owed = record.event_id if record.state == UNPREPARE_STARTED else ""
            if not await self.parts.outbox.send(event, owed or new_event_id()):
                with failures_as(CheckpointFailure, "keeping the ClaimUnprepared event the bus refused"):
                    await self.parts.outbox.keep()

    def _drop(self, record: ClaimRecord, clock: PhaseClock) -> None:
        with clock.phase("checkpoint"), failures_as(CheckpointFailure, "dropping the checkpoint record"):
            self.parts.checkpoint.remove(record.uid)
        self._records.pop(record.uid, None)
        self._count_devices()

    def _shared_elsewhere(self, plan: SharingPlan, uid: str) -> set[int]:
        """GPUs another claim still has set up the same way: their mode stays."""
        return {
            minor
            for other in self._records.values()
            if other.uid != uid
            for other_plan in other.sharing
            if type(other_plan) is type(plan)
            for minor in other_plan.minors
        }

    # --- records --------------------------------------------------------------------------------------------

    def _save(self, record: ClaimRecord, clock: PhaseClock) -> None:
        with clock.phase("checkpoint"), failures_as(CheckpointFailure, "writing the checkpoint"):
            self.parts.checkpoint.save(record)
        self._remember(record)

    def _remember(self, record: ClaimRecord) -> None:
        self._records[record.uid] = record
        self._count_devices()

    def _check_room(self, ref: ClaimRef, plan: ClaimPlan, inventory: Inventory) -> None:
        """Refuse devices other claims hold, and a share that does not fit beside the other shares of its GPU."""
        others = [record for record in self._records.values() if record.uid != ref.uid]
        held = [
            Holder(claim=record.label, target=device.target, share=device.share_id is not None)
            for record in others
            for device in record.devices
            if not device.admin_access
        ]
        check_free([(d.target, d.share_id is not None) for d in plan.devices if not d.admin_access], held)
        for share in plan.sharing:
            if isinstance(share, SharePlan):
                shares = [(r.label, p) for r in others for p in r.sharing if isinstance(p, SharePlan)]
                check_fits(share, shares, inventory)

    def _count_devices(self) -> None:
        counts = {"gpu": 0, "mig": 0, "vfio": 0}
        for record in self._records.values():
            if record.state == PREPARE_COMPLETED:
                for target in {d.target.name: d.target for d in record.devices}.values():
                    counts[kind_of(target)] += 1
        for kind, count in counts.items():
            metrics.PREPARED_DEVICES_BY(kind).set(count)

    @property
    def records(self) -> dict[str, ClaimRecord]:
        """The checkpoint as this process holds it (read-only use: tests, the CLI's status)."""
        return dict(self._records)

    # --- start and periodic cleanup -------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the checkpoint and bring the node in line with it, before any request is served."""
        loaded = await asyncio.to_thread(self.parts.checkpoint.load)
        for problem in [*loaded.problems, *await asyncio.to_thread(self.parts.outbox.load)]:
            log.error("checkpoint: %s", problem)
        self._newer = loaded.newer
        self._records = {record.uid: record for record in loaded.records}
        for record in loaded.records:
            await self._reconcile(record)
        await asyncio.to_thread(self._remove_orphan_specs)
        await self._stop_orphan_daemons()
        self._count_devices()
        await self._announce_again()
        log.info("checkpoint loaded", extra={"claims": len(self._records), "boot_id": self.parts.boot_id})

    async def _reconcile(self, record: ClaimRecord) -> None:
        if record.boot_id != self.parts.boot_id:
            await self._forget_after_reboot(record)
        elif record.state != PREPARE_COMPLETED:
            log.info("claim %s: rolling back a %s left by the last run", record.ref, record.state)
            try:
                await self._take_apart(record, PhaseClock())
            except ClaimProblem as exc:
                log.error("claim %s: rollback failed, will retry: %s", record.ref, exc.problem)

    async def _announce_again(self) -> None:
        """Events a crash may have kept from going out: the owed ones, and ``ClaimPrepared`` of every record
        completed since the outbox's watermark (JetStream drops those that did go out)."""
        watermark = self.parts.outbox.watermark
        for record in list(self._records.values()):
            if record.state == PREPARE_COMPLETED and record.event_id and (record.completed_at or 0) >= watermark:
                await self.parts.outbox.send(self._prepared_event(record), record.event_id)
        await self.parts.outbox.flush()

    def _prepared_event(self, record: ClaimRecord) -> ClaimPrepared:
        """The announcement of a completed record, as sent again (the timings were the first send's)."""
        return ClaimPrepared(node=self.parts.node, claim=record.ref, devices=list(record.prepared))

    async def _forget_after_reboot(self, record: ClaimRecord) -> None:
        """A reboot took MIG devices, daemons and sharing settings with it: drop the record, touch no device."""
        log.info("claim %s: recorded in an earlier boot; forgetting it", record.ref)
        await asyncio.to_thread(self.parts.specs.remove, record.cdi_spec)
        await asyncio.to_thread(shutil.rmtree, self.parts.mps_root / record.uid, True)
        clock = PhaseClock()
        if record.state != PREPARE_STARTED:  # the claim was announced prepared; the reboot unprepared it
            await self._announce_unprepared(record, clock)
        self._drop(record, clock)

    async def _stop_orphan_daemons(self) -> None:
        """Shared GPUs' daemons no recorded share uses: a reboot dropped their records (and ended the daemons,
        leaving the directories)."""
        root = self.parts.mps_root / DAEMONS
        used = {plan.gpu for record in self._records.values() for plan in record.sharing if isinstance(plan, SharePlan)}
        for gpu in await asyncio.to_thread(_subdirectories, root):
            if gpu not in used:
                log.info("stopping the MPS daemon of shared GPU %s: no claim holds a share of it", gpu)
                daemon = MpsPlan(group=gpu, directory=str(root / gpu), devices=(gpu,), minors=())
                try:
                    await self.parts.daemons.stop(daemon)
                except (MpsError, OSError) as exc:
                    log.error("cannot stop the MPS daemon of shared GPU %s: %s", gpu, exc, extra={"device": gpu})

    def _remove_orphan_specs(self) -> None:
        """Specs of claims the checkpoint does not hold (a crash between spec and record, a lost record)."""
        specs = self.parts.specs
        specs.remove_temporaries()
        prefix = claim_spec_prefix(self.parts.driver)
        known = set(self._records) | self._newer
        for name in specs.names(prefix):
            if name.removeprefix(prefix) not in known:
                log.info("removing a CDI spec no prepared claim owns", extra={"spec": name})
                specs.remove(name)

    async def cleanup(self) -> int:
        """Roll back unfinished claims whose ResourceClaim is gone; returns how many went."""
        removed = 0
        for uid, record in list(self._records.items()):
            if record.state == PREPARE_COMPLETED or self._claims.locked(uid) or await self._still_exists(record):
                continue
            async with self._claims.hold([uid]):
                current = self._records.get(uid)
                if current is None or current.state == PREPARE_COMPLETED:
                    continue
                try:
                    await self._take_apart(current, PhaseClock())
                    removed += 1
                    log.info("claim %s: rolled back; the claim no longer exists", current.ref)
                except ClaimProblem as exc:
                    log.error("claim %s: cleanup failed, will retry: %s", current.ref, exc.problem)
        return removed

    async def _still_exists(self, record: ClaimRecord) -> bool:
        try:
            obj = await self.parts.kube.get(RESOURCE_CLAIMS, record.name, record.namespace)
        except NotFound:
            return False
        except KubeError as exc:
            log.warning("cleanup cannot read claim %s: %s", record.ref, exc)
            return True
        return bool((obj.get("metadata") or {}).get("uid") == record.uid)


def _subdirectories(root: Path) -> list[str]:
    return sorted(entry.name for entry in root.iterdir() if entry.is_dir()) if root.is_dir() else []


def _created_mig_devices(record: ClaimRecord) -> list[str]:
    """MIG devices the claim creates (or may have created before a crash), each once: destroyed when it goes."""
    return list(
        dict.fromkeys(d.target.name for d in record.devices if isinstance(d.target, MigTarget) and d.target.dynamic)
    )


async def _attempt(errors: list[str], what: str, step: Awaitable[object]) -> None:
    """Await ``step``; a failure is noted in ``errors`` so the remaining steps still run."""
    try:
        await step
    except Exception as exc:
        errors.append(f"{what}: {exc}")
