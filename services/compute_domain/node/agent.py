"""The node side of compute domains: channel claims prepared and unprepared, the domains' IMEX daemons run.

A channel prepare, as the kubelet shim's second driver forwards it (``PrepareChannels``):

1. read the claim (allocated here, to ``compute-domain.gpudra.io``, with a ``ComputeDomainChannelConfig``);
2. refuse it on a node without NVLink fabric, and when the claim is not in its domain's namespace (the
   domain's roster says which namespace; a domain not known within ``admission_timeout`` is an error naming
   it);
3. record the claim ``started`` with its channel (``ledger``), and join the domain: announce the node
   (``ComputeDomainNodeChanged``), wait for the controller's admission in the roster (a refusal ends the
   prepare with the controller's reason), start the domain's IMEX daemon with the members as peers;
4. wait, bounded by ``ready_timeout``, for the local daemon to be ready (an error with the daemon's own words
   otherwise; the kubelet retries and the daemon keeps starting);
5. write the claim's CDI spec (``/dev/nvidia-caps-imex-channels/channel<N>``), record it ``completed``, answer.

An unprepare removes the spec and the record; the domain's last claim on the node stops its daemon and leaves
the domain. A start after a crash rolls ``started`` claims back (spec removed, domain left) and restarts the
daemons of ``completed`` ones, so a kill at any point leaves nothing behind. Every daemon state change is
published in order, so the controller sees readiness within one event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import msgspec

from libs.bus import Bus
from libs.cdi import SpecDir, claim_spec_name, claim_spec_prefix
from libs.claims.allocation import check_ref
from libs.claims.problems import ApiUnavailable, ClaimNotFound, ClaimNotUsable, ClaimProblem
from libs.events.catalogue import ClaimPrepareResult, ClaimRef, ClaimUnprepareResult, PreparedDevice
from libs.events.catalogue.computedomains import ComputeDomainNodeChanged
from libs.kube import RESOURCE_CLAIMS, KubeApi, KubeError, NotFound
from services.compute_domain.node.channels import (
    ChannelClaim,
    channel_spec,
    choose_channel,
    injected_channels,
    prepared,
    read_channel_claim,
)
from services.compute_domain.node.clique import channel_refusal
from services.compute_domain.node.daemon import DaemonState, DaemonTiming, ImexDaemon, imex_commands, not_ready
from services.compute_domain.node.imex_config import Member, domain_files, install_hosts_block
from services.compute_domain.node.ledger import ChannelRecord, Ledger
from services.compute_domain.node.rosters import Rosters
from services.compute_domain.roster import Roster

log = logging.getLogger(__name__)

PUBLISH_RETRY_SECONDS = 1.0


class DomainNotFound(ClaimProblem):
    """No ComputeDomain with the claim's domain UID is known to the controller."""


class NotAdmitted(ClaimProblem):
    """The controller refused this node, or did not answer in time."""


class DaemonNotReady(ClaimProblem):
    """The domain's IMEX daemon on this node did not become ready in time."""


@dataclass(frozen=True, kw_only=True)
class NodeFacts:
    """What the agent needs to know about its node and how patient to be."""

    node: str
    driver: str
    clique: str
    ip_address: str
    state_dir: Path
    driver_root: str
    """Where this process sees the driver's files (the IMEX binaries, when installed)."""
    channel_major: int | None
    system_hosts: Path | None
    """The resolver's hosts file the real IMEX reads its peers' names from (None: the simulated daemon)."""
    admission_timeout: float
    ready_timeout: float
    daemon_timing: DaemonTiming


def describe(ref: ClaimRef) -> str:
    return f"claim {ref.namespace}/{ref.name} (uid {ref.uid})"


def imex_members(roster: Roster) -> list[Member]:
    return [Member(node=m.node, index=m.index, ip_address=m.ip_address) for m in roster.members]


class ChannelAgent:
    def __init__(
        self, bus: Bus, kube: KubeApi, *, rosters: Rosters, ledger: Ledger, specs: SpecDir, facts: NodeFacts
    ) -> None:
        self._bus, self._kube, self._rosters, self._ledger, self._specs = bus, kube, rosters, ledger, specs
        self.facts = facts
        self.daemons: dict[str, ImexDaemon] = {}
        self.states: dict[str, DaemonState] = {}
        self._states_changed = asyncio.Event()
        """Set (and replaced) at each daemon state change: what a prepare waiting for readiness awaits."""
        self._locks: dict[str, asyncio.Lock] = {}
        self._choosing = asyncio.Lock()
        self._outgoing: asyncio.Queue[ComputeDomainNodeChanged] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []

    # --- life ---------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Recovers what a previous run left, then rejoins the domains whose claims are prepared (in the
        background: a controller that is away must not keep the node's service from starting)."""
        self._tasks.append(asyncio.create_task(self._publish_loop(), name="compute-domain node events"))
        self._rosters.on_change = self._roster_changed
        await self._recover()
        for uid in sorted({record.domain_uid for record in self._ledger.records.values()}):
            self._tasks.append(asyncio.create_task(self._rejoin(uid), name=f"rejoin {uid}"))

    async def stop(self) -> None:
        """Stops the daemons (each says NotReady, so the domain shows this node's absence), then the publisher."""
        self._rosters.on_change = None
        await asyncio.gather(*(daemon.stop() for daemon in self.daemons.values()), return_exceptions=True)
        self.daemons.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2.0):
                await self._outgoing.join()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _recover(self) -> None:
        left: set[str] = set()
        for record in list(self._ledger.records.values()):
            if record.state == "started":
                log.warning(
                    "channel claim %s/%s was being prepared when the service stopped; rolled back",
                    record.namespace,
                    record.name,
                    extra={"claim": record.uid, "domain": record.domain_uid},
                )
                await asyncio.to_thread(self._specs.remove, claim_spec_name(self.facts.driver, record.uid))
                await self._ledger.drop(record.uid)
                left.add(record.domain_uid)
        held = {record.domain_uid for record in self._ledger.records.values()}
        for uid in sorted(left - held):
            await self._clear_domain(uid)
            self._announce_leave(uid)
        known = {claim_spec_name(self.facts.driver, uid) for uid in self._ledger.records}
        for name in await asyncio.to_thread(self._specs.names, claim_spec_prefix(self.facts.driver)):
            if name not in known:
                await asyncio.to_thread(self._specs.remove, name)
                log.info("removed CDI spec %s of no prepared channel claim", name)

    async def _rejoin(self, uid: str) -> None:
        try:
            async with self._lock(uid):
                await self._join(uid)
        except ClaimProblem as exc:
            log.error("cannot rejoin ComputeDomain %s: %s", uid, exc, extra={"domain": uid})

    # --- prepare ------------------------------------------------------------------------------------------

    async def prepare(self, claims: Sequence[ClaimRef]) -> dict[str, ClaimPrepareResult]:
        results = await asyncio.gather(*(self._prepare_one(ref) for ref in claims))
        return {ref.uid: result for ref, result in zip(claims, results, strict=True)}

    async def _prepare_one(self, ref: ClaimRef) -> ClaimPrepareResult:
        try:
            return ClaimPrepareResult(devices=await self._prepare(ref))
        except ClaimProblem as exc:
            log.warning("%s: %s", describe(ref), exc.problem, extra={"claim": ref.uid, "reason": exc.reason})
            return ClaimPrepareResult(error=f"{describe(ref)}: {exc.problem}")

    async def _prepare(self, ref: ClaimRef) -> list[PreparedDevice]:
        check_ref(ref)
        claim = read_channel_claim(await self._read(ref), ref, driver=self.facts.driver, node=self.facts.node)
        record = self._ledger.records.get(ref.uid)
        if record is not None and record.state == "completed":
            return prepared(self.facts.driver, claim, self.facts.node)
        refusal = channel_refusal(self.facts.clique, node=self.facts.node, domain=claim.domain_uid)
        if refusal:
            raise ClaimNotUsable(refusal)
        roster = await self._roster(claim.domain_uid)
        if roster.namespace != ref.namespace:
            raise ClaimNotUsable(
                f"it is in namespace {ref.namespace}, but ComputeDomain {roster.namespace}/{roster.name} is in "
                f"{roster.namespace}: a channel claim must be in its domain's namespace"
            )
        async with self._lock(claim.domain_uid):
            record = await self._start_record(claim)
            try:
                await self._join(claim.domain_uid)
            except NotAdmitted:
                await self._abandon(record)
                raise
        await self._wait_ready(claim.domain_uid, roster)
        return await self._complete(claim, record)

    async def _read(self, ref: ClaimRef) -> dict[str, object]:
        what = f"ResourceClaim {ref.namespace}/{ref.name}"
        try:
            return await self._kube.get(RESOURCE_CLAIMS, ref.name, ref.namespace)
        except NotFound:
            raise ClaimNotFound(f"{what} does not exist") from None
        except KubeError as exc:
            raise ApiUnavailable(f"cannot read {what}: {exc}") from exc

    async def _roster(self, uid: str) -> Roster:
        try:
            await self._rosters.wait_for(lambda: uid in self._rosters.by_uid, self.facts.admission_timeout)
        except TimeoutError:
            raise DomainNotFound(
                f"no ComputeDomain with UID {uid} is known after {self.facts.admission_timeout:g}s "
                "(deleted, or the compute-domain controller is not running)"
            ) from None
        return self._rosters.by_uid[uid]

    async def _start_record(self, claim: ChannelClaim) -> ChannelRecord:
        """The claim recorded with its channel; choosing and recording is one step node-wide, so two domains
        preparing at once cannot both take the same free channel."""
        async with self._choosing:
            return await self._choose_and_record(claim)

    async def _choose_and_record(self, claim: ChannelClaim) -> ChannelRecord:
        own = self._ledger.records.get(claim.ref.uid)
        record = ChannelRecord(
            uid=claim.ref.uid,
            namespace=claim.ref.namespace,
            name=claim.ref.name,
            domain_uid=claim.domain_uid,
            channel=choose_channel(claim.domain_uid, self._ledger.held()),
            mode=claim.mode,
            request=claim.request,
            slot=claim.slot,
            state="started",
        )
        if own != record:
            await self._ledger.put(record)
        return record

    async def _complete(self, claim: ChannelClaim, record: ChannelRecord) -> list[PreparedDevice]:
        channels = injected_channels(record.channel, record.mode)
        spec = channel_spec(self.facts.driver, claim, channels, self.facts.channel_major)
        await asyncio.to_thread(self._specs.write, claim_spec_name(self.facts.driver, claim.ref.uid), spec)
        await self._ledger.put(msgspec.structs.replace(record, state="completed"))
        log.info(
            "channel claim %s/%s prepared: IMEX channel %d of ComputeDomain %s",
            record.namespace,
            record.name,
            record.channel,
            record.domain_uid,
            extra={"claim": record.uid, "domain": record.domain_uid, "mode": record.mode},
        )
        return prepared(self.facts.driver, claim, self.facts.node)

    async def _abandon(self, record: ChannelRecord) -> None:
        """A claim that cannot join: its record goes, and the node leaves if nothing else holds the domain."""
        await self._ledger.drop(record.uid)
        if not self._ledger.of_domain(record.domain_uid):
            self._announce_leave(record.domain_uid)

    # --- the domain's daemon ------------------------------------------------------------------------------

    async def _join(self, uid: str) -> None:
        """Admitted and the daemon started (no-op when it runs); ``NotAdmitted`` when refused or unanswered."""
        if uid in self.daemons:
            return
        self._announce(uid, not_ready("joining the domain"), index=-1)

        def decided() -> bool:
            roster = self._rosters.by_uid.get(uid)
            return roster is not None and (
                roster.member(self.facts.node) is not None or self.facts.node in roster.refused
            )

        try:
            await self._rosters.wait_for(decided, self.facts.admission_timeout)
        except TimeoutError:
            raise NotAdmitted(
                f"the compute-domain controller did not admit node {self.facts.node} to ComputeDomain {uid} within "
                f"{self.facts.admission_timeout:g}s (is it running?)"
            ) from None
        roster = self._rosters.by_uid[uid]
        if self.facts.node in roster.refused:
            raise NotAdmitted(roster.refused[self.facts.node])
        files = domain_files(self.facts.state_dir, uid)
        commands = imex_commands(self.facts.driver_root, files)
        daemon = ImexDaemon(
            domain_uid=uid,
            node=self.facts.node,
            files=files,
            bind_ip=self.facts.ip_address,
            commands=commands,
            on_state=lambda state: self._daemon_state(uid, state),
            system_hosts=None if commands.simulated else self.facts.system_hosts,
            timing=self.facts.daemon_timing,
        )
        self.daemons[uid] = daemon
        await daemon.start(imex_members(roster))

    async def _wait_ready(self, uid: str, roster: Roster) -> None:
        def ready() -> bool:
            state = self.states.get(uid)
            return state is not None and state.status == "Ready"

        try:
            async with asyncio.timeout(self.facts.ready_timeout):
                while not ready():
                    await self._states_changed.wait()
        except TimeoutError:
            state = self.states.get(uid)
            why = state.reason if state is not None and state.reason else "no answer from it yet"
            raise DaemonNotReady(
                f"the IMEX daemon of ComputeDomain {roster.namespace}/{roster.name} on node {self.facts.node} is not "
                f"ready after {self.facts.ready_timeout:g}s: {why}"
            ) from None

    def _daemon_state(self, uid: str, state: DaemonState) -> None:
        self.states[uid] = state
        roster = self._rosters.by_uid.get(uid)
        member = roster.member(self.facts.node) if roster is not None else None
        self._announce(uid, state, index=member.index if member is not None else -1)
        changed, self._states_changed = self._states_changed, asyncio.Event()
        changed.set()

    async def _roster_changed(self, uid: str, roster: Roster | None) -> None:
        daemon = self.daemons.get(uid)
        if daemon is not None and roster is not None and roster.member(self.facts.node) is not None:
            await daemon.update_members(imex_members(roster))

    async def _leave(self, uid: str) -> None:
        daemon = self.daemons.pop(uid, None)
        if daemon is not None:
            await daemon.stop()
        self.states.pop(uid, None)
        await self._clear_domain(uid)
        self._announce_leave(uid)

    async def _clear_domain(self, uid: str) -> None:
        """The domain's files on this node, and its block in the resolver's hosts file."""
        await asyncio.to_thread(shutil.rmtree, domain_files(self.facts.state_dir, uid).directory, True)
        if self.facts.system_hosts is not None and self.facts.system_hosts.exists():
            await asyncio.to_thread(install_hosts_block, self.facts.system_hosts, uid, "")

    # --- unprepare ----------------------------------------------------------------------------------------

    async def unprepare(self, claims: Sequence[ClaimRef]) -> dict[str, ClaimUnprepareResult]:
        results = await asyncio.gather(*(self._unprepare_one(ref) for ref in claims))
        return {ref.uid: result for ref, result in zip(claims, results, strict=True)}

    async def _unprepare_one(self, ref: ClaimRef) -> ClaimUnprepareResult:
        try:
            check_ref(ref)
            record = self._ledger.records.get(ref.uid)
            if record is None:
                return ClaimUnprepareResult()  # never prepared here, or already unprepared: nothing to do
            async with self._lock(record.domain_uid):
                await asyncio.to_thread(self._specs.remove, claim_spec_name(self.facts.driver, ref.uid))
                await self._ledger.drop(ref.uid)
                if not self._ledger.of_domain(record.domain_uid):
                    await self._leave(record.domain_uid)
            log.info("channel claim %s/%s unprepared", ref.namespace, ref.name, extra={"claim": ref.uid})
            return ClaimUnprepareResult()
        except ClaimProblem as exc:
            return ClaimUnprepareResult(error=f"{describe(ref)}: {exc.problem}")
        except OSError as exc:
            return ClaimUnprepareResult(error=f"{describe(ref)}: cannot remove its CDI spec or record: {exc}")

    # --- events -------------------------------------------------------------------------------------------

    def _lock(self, uid: str) -> asyncio.Lock:
        return self._locks.setdefault(uid, asyncio.Lock())

    def _announce(self, uid: str, state: DaemonState, *, index: int) -> None:
        self._outgoing.put_nowait(
            ComputeDomainNodeChanged(
                node=self.facts.node,
                domain_uid=uid,
                clique_id=self.facts.clique,
                index=index,
                status=state.status,
                ip_address=self.facts.ip_address,
                reason=state.reason,
            )
        )

    def _announce_leave(self, uid: str) -> None:
        self._outgoing.put_nowait(
            ComputeDomainNodeChanged(
                node=self.facts.node,
                domain_uid=uid,
                clique_id=self.facts.clique,
                index=-1,
                status="NotReady",
                ip_address=self.facts.ip_address,
                reason="left the domain (no channel claim of it on this node)",
                member=False,
            )
        )

    async def _publish_loop(self) -> None:
        """One at a time and in order: a node's events are its membership, and order is their meaning."""
        while True:
            event = await self._outgoing.get()
            while True:
                try:
                    await self._bus.publish(event)
                    break
                except Exception as exc:
                    log.warning(
                        "cannot publish compute-domain membership; retrying: %s",
                        exc,
                        extra={"domain": event.domain_uid},
                    )
                    await asyncio.sleep(PUBLISH_RETRY_SECONDS)
            self._outgoing.task_done()
