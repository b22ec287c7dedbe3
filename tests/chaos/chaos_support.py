"""The chaos soak: the whole standalone system as ``gpudra up`` runs it, under SIGKILL, with work going on.

``gpudra up`` runs on a simulated ``mixed-mig`` node with dynamic MIG. Eight claims (a whole GPU, time-slicing,
MPS, static and dynamic MIG, two devices at once) go through prepare/unprepare cycles over the kubelet's real
sockets, asked again until answered as the kubelet does; a fault injector sends XIDs to the one GPU no claim
uses, which the health monitors report and the remediation controller acts on (GPU resets); a killer sends
SIGKILL to a random process of the system (any service, or the nats-server) at random moments, and the
supervisor starts it again. Afterwards the audit compares what the node holds with what the kubelet believes
(claim_prep_crash_support's audit: checkpoint, CDI specs, MIG devices, sharing, claim events) and checks that
the remediation controller took every health event (acked, or dead-lettered) and decided none twice; then every
service must be ready again.

The same harness runs the short form in the test suite and the long one in ``python -m bench chaos``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
from nats.js import api

from cli import endpoints
from cli.up import SERVICES
from libs.bus import Bus, BusError, CommandError
from libs.bus.directory import list_services
from libs.bus.topology import DEADLETTER_STREAM, HEALTH_REMEDIATION
from libs.events.catalogue import ClaimRef, InjectFault, InjectFaultReply
from libs.kube import LocalKube
from libs.kubeletclient import KubeletClient, KubeletClientError
from libs.settings import CommonSettings
from services.claim_preparation.outbox import RETRY_SECONDS
from services.claim_preparation.settings import Settings
from tests.claim_preparation.claim_prep_crash_support import (
    CLAIMS,
    ClaimProgress,
    CrashClaim,
    audit,
    error_kind,
    snapshot,
    store_claims,
)
from tests.claim_preparation.claim_prep_support import DRIVER, NODE

PROFILE = "mixed-mig"
FAULT_GPU = "gpu-6"
"""The GPU no soak claim uses: its faults are remediated (reset) without taking a claim's device away. A whole GPU
without MIG devices: a reset takes a GPU's MIG devices with it, as on real hardware."""
FAULT_XIDS = (48, 31, 13, 94, 74, 95, 43)
"""Device-scope XIDs: resets and records; never a node reboot, which would release every claim."""
SOAK_CLAIMS: tuple[CrashClaim, ...] = tuple(c for c in CLAIMS if FAULT_GPU not in c.device_names)[:8]
Answer = tuple[tuple[str, tuple[str, ...]], ...]
CALL_TIMEOUT = 3.0
"""A kubelet call without an answer by then is asked again (the process serving it may have been killed)."""


@dataclass(frozen=True)
class SoakPlan:
    cycles: int
    """Prepare/unprepare cycles in all, shared by the claims (at least: work goes on until ``kills`` too)."""
    faults: int
    kills: int = 0
    """Kills at least: every process of the system in turn, in a shuffled order, round after round."""
    cycles_between_kills: tuple[int, int] = (5, 40)
    """Cycles completed between two kills, drawn uniformly: the system makes progress between kills, as it must
    (a kill before it is back would test the supervisor's back-off, not the system)."""
    seed: int = 1


@dataclass
class SoakReport:
    cycles: int = 0
    seconds: float = 0.0
    kills: Counter[str] = field(default_factory=Counter)
    faults: int = 0
    calls: Counter[str] = field(default_factory=Counter)
    retries: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    """What the retried calls were answered, by kind."""
    latencies_ms: list[float] = field(default_factory=list)
    ready_again_s: float = 0.0
    problems: list[str] = field(default_factory=list)
    health: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        p50 = statistics.median(self.latencies_ms) if self.latencies_ms else 0.0
        rate = self.cycles / max(self.seconds, 1e-9)
        kills = f"{sum(self.kills.values())} kills {dict(self.kills)}"
        retried = f"retried {dict(self.retries)} ({dict(self.errors.most_common(6))})"
        ready = f"all ready again {self.ready_again_s:.1f} s after the last kill"
        return (
            f"{self.cycles} cycles in {self.seconds:.1f} s ({rate:.1f}/s), {kills}, {self.faults} faults, "
            f"calls {dict(self.calls)}, {retried}, p50 call {p50:.1f} ms, {ready}, health {self.health}; "
            f"problems: {len(self.problems)}"
        )


class Soak:
    """One running system and the run's bookkeeping."""

    def __init__(self, state_dir: Path, kubelet_dir: Path, up: asyncio.subprocess.Process, system: endpoints.Endpoints):
        self.state_dir = state_dir
        self.kubelet_dir = kubelet_dir
        self.up = up
        self.system = system
        self.report = SoakReport()
        self.progress: dict[str, ClaimProgress] = {}
        self._finished = asyncio.Event()
        self._completed = 0
        self._cycled = asyncio.Condition()
        self._client: KubeletClient | None = None
        self._retired: list[KubeletClient] = []
        self._registering = asyncio.Lock()
        self.last_kill = time.monotonic()

    # -- the kubelet --

    async def cycles(self, plan: SoakPlan) -> None:
        """Every claim cycles until the plan's total is reached."""
        await asyncio.gather(*(self._cycle(uid, plan) for uid in self.progress))

    def _more(self, plan: SoakPlan) -> bool:
        return self._completed < plan.cycles or sum(self.report.kills.values()) < plan.kills

    async def _cycle(self, uid: str, plan: SoakPlan) -> None:
        while self._more(plan):
            await self._call(uid, "prepare")
            await self._call(uid, "unprepare")
            async with self._cycled:
                self._completed += 1
                self.report.cycles = self._completed
                self._cycled.notify_all()

    async def _call(self, uid: str, operation: str) -> None:
        """Asked until answered without an error, as the kubelet does."""
        progress = self.progress[uid]
        while True:
            self.report.calls[operation] += 1
            began = time.perf_counter()
            try:
                async with asyncio.timeout(CALL_TIMEOUT):
                    answer = await self._once(await self.kubelet(), progress.ref, operation)
            except (KubeletClientError, TimeoutError) as exc:
                answer = repr(exc)
                self._forget(exc)
            if not isinstance(answer, str):
                break
            self.report.retries[operation] += 1
            self.report.errors[error_kind(answer)] += 1
            await asyncio.sleep(0.05)  # the kubelet's back-off, short
        self.report.latencies_ms.append((time.perf_counter() - began) * 1000)
        if operation == "prepare":
            progress.answers.add(answer)
            progress.prepared, progress.prepares = True, progress.prepares + 1
        else:
            progress.prepared, progress.unprepares = False, progress.unprepares + 1

    @staticmethod
    async def _once(client: KubeletClient, ref: ClaimRef, operation: str) -> Answer | str:
        """The prepared devices (empty for an unprepare), or the claim's error."""
        claim = (ref.namespace, ref.name, ref.uid)
        if operation == "prepare":
            prepared = (await client.prepare([claim]))[ref.uid]
            return prepared.error or tuple((d.device_name, tuple(d.cdi_device_ids)) for d in prepared.devices)
        return (await client.unprepare([claim]))[ref.uid].error or ()

    async def kubelet(self) -> KubeletClient:
        """The plugin as the kubelet has it registered; registered again after the shim restarted, as the
        kubelet's plugin watcher does (a gRPC channel to a socket that went away backs off for minutes)."""
        async with self._registering:
            while self._client is None:
                registration = Path(self.system.kubelet.registration_dir) / f"{DRIVER}-reg.sock"
                try:
                    self._client = await KubeletClient.register(
                        registration, driver_name=DRIVER, call_timeout=CALL_TIMEOUT
                    )
                except (KubeletClientError, OSError):
                    await asyncio.sleep(0.1)  # the shim is not serving yet
            return self._client

    def _forget(self, failure: Exception) -> None:
        """Register again at the next call; the old client is closed at the end (other calls may be using it)."""
        if self._client is not None and "UNAVAILABLE" in str(failure):
            self._retired.append(self._client)
            self._client = None

    # -- the faults --

    async def faults(self, plan: SoakPlan, bus: Bus, rng: random.Random) -> None:
        for index in range(plan.faults):
            if self._finished.is_set():
                return
            xid = FAULT_XIDS[index % len(FAULT_XIDS)]
            command = InjectFault(device=FAULT_GPU, kind="xid", xid=xid)
            while not self._finished.is_set():
                try:
                    await bus.request(NODE, command, InjectFaultReply, timeout=2.0)
                    break
                except (CommandError, BusError):
                    await asyncio.sleep(0.1)  # discovery (which injects) or NATS is down: try again
            self.report.faults += 1
            await self._pause(rng.uniform(0.01, 0.2))

    # -- the killer --

    async def killer(self, plan: SoakPlan, rng: random.Random) -> None:
        victims: list[str] = []
        while not self._finished.is_set():
            if await self._progress(self._completed + rng.randint(*plan.cycles_between_kills)):
                return
            if not victims:
                victims = rng.sample([*SERVICES, "nats-server"], len(SERVICES) + 1)
            victim = victims.pop()
            pid = endpoints.read(self.state_dir).services.get(victim, 0)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                self.report.kills[victim] += 1
            self.last_kill = time.monotonic()

    async def _progress(self, cycles: int) -> bool:
        """Until ``cycles`` cycles are done; True when the run finished meanwhile."""
        async with self._cycled:
            await self._cycled.wait_for(lambda: self._completed >= cycles or self._finished.is_set())
        return self._finished.is_set()

    async def _pause(self, seconds: float) -> bool:
        """True when the run finished meanwhile."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._finished.wait(), seconds)
        return self._finished.is_set()

    # -- the whole run --

    async def run(self, plan: SoakPlan) -> SoakReport:
        rng = random.Random(plan.seed)
        bus = await connect_operator(self.system)
        try:
            kube = await LocalKube.open(bus.js)
            stored = await store_claims(kube, SOAK_CLAIMS)
            self.progress = {uid: ClaimProgress(claim, ref) for uid, (claim, ref) in stored.items()}
            began = time.perf_counter()
            side = [asyncio.create_task(self.killer(plan, rng)), asyncio.create_task(self.faults(plan, bus, rng))]
            try:
                await self.cycles(plan)
            finally:
                self._finished.set()
                async with self._cycled:
                    self._cycled.notify_all()
                await asyncio.gather(*side, return_exceptions=True)
            self.report.seconds = time.perf_counter() - began
            await self.settle(bus)
            self.report.problems += await self.claim_audit(bus)
            self.report.problems += await self.health_audit(bus)
        finally:
            self._forget(KubeletClientError("UNAVAILABLE: done"))
            for client in self._retired:
                await client.close()
            await bus.close()
        return self.report

    async def settle(self, bus: Bus, timeout: float = 60.0) -> None:
        """Every service registered and the remediation controller caught up, once the killing stopped."""
        async with asyncio.timeout(timeout):
            while {info.name for info in await list_services(bus.nc, quiet=0.2, limit=1.0)} < set(SERVICES):
                pass
            self.report.ready_again_s = time.monotonic() - self.last_kill
            while (await remediation_backlog(bus)) > 0:  # noqa: ASYNC110 - server-side state: nothing to await
                await asyncio.sleep(0.2)

    async def claim_audit(self, bus: Bus) -> list[str]:
        """The node against what the client saw. An event a dying server refused is sent again within the outbox's
        retry period: a shortfall of events is only a problem if it lasts longer than a few of those."""
        deadline = time.monotonic() + 5 * RETRY_SECONDS
        while True:
            problems = audit(await snapshot(self.claim_settings(), bus.js), self.progress)
            if not problems or time.monotonic() > deadline:
                return problems
            await asyncio.sleep(RETRY_SECONDS / 4)

    def claim_settings(self) -> Settings:
        """claim_preparation's settings as ``gpudra up`` gave them: where its checkpoint, CDI and MIG state are."""
        return Settings(
            state_dir=self.system.state_dir,
            cdi_dir=self.system.cdi_dir,
            node_name=NODE,
            backend="simulated",
            profile=PROFILE,
            mig_mode="dynamic",
        )

    async def health_audit(self, bus: Bus) -> list[str]:
        """Every health event taken (acked or dead-lettered), none decided twice."""
        info = await bus.js.consumer_info(HEALTH_REMEDIATION.stream, HEALTH_REMEDIATION.name)
        health = HEALTH_REMEDIATION.stream
        verdicts = await read_all(bus, health, "gpudra.v1.*.health.verdicts")
        decided = Counter(i for v in verdicts for i in msgspec.json.decode(v).get("source_event_ids", ()))
        dead = await read_all(bus, DEADLETTER_STREAM, f"gpudra.deadletter.{health}.>")
        events = await read_all(bus, health, "gpudra.v1.*.health.events")
        self.report.health = {
            "events": len(events),
            "verdicts": len(verdicts),
            "dead_lettered": len(dead),
            "pending": info.num_pending,
            "unacked": info.num_ack_pending,
        }
        problems = [f"health event {i} was decided {n} times" for i, n in decided.items() if n > 1]
        if info.num_pending or info.num_ack_pending:
            problems.append(f"the remediation controller left {info.num_pending} health events untaken")
        if self.report.faults and not verdicts:
            problems.append("faults were injected but no verdict was published")
        return problems


async def remediation_backlog(bus: Bus) -> int:
    info = await bus.js.consumer_info(HEALTH_REMEDIATION.stream, HEALTH_REMEDIATION.name)
    return int(info.num_pending + info.num_ack_pending)


async def read_all(bus: Bus, stream: str, subject: str) -> list[bytes]:
    """The data of every message on ``subject`` in ``stream``, oldest first."""
    wanted = sum(((await bus.js.stream_info(stream, subjects_filter=subject)).state.subjects or {}).values())
    found: list[bytes] = []
    if not wanted:
        return found
    reader = await bus.js.subscribe(subject, stream=stream, ordered_consumer=True, deliver_policy=api.DeliverPolicy.ALL)
    try:
        while len(found) < wanted:
            found.append((await reader.next_msg(timeout=10)).data)
    finally:
        await reader.unsubscribe()
    return found


async def connect_operator(system: endpoints.Endpoints, timeout: float = 20.0) -> Bus:
    """The operator's client; the nats-server may be restarting, so it is tried until it connects."""
    settings = CommonSettings(nats_url=system.nats_url, nats_creds=system.nats_creds, node_name=system.node)
    async with asyncio.timeout(timeout):
        while True:
            try:
                return await Bus.connect(settings, "operator")
            except BusError:
                continue


async def _gpudra(*args: str, env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cli", *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )


@asynccontextmanager
async def running_system(root: Path) -> AsyncIterator[Soak]:
    """``gpudra up`` on the soak's machine, until the block exits (then Ctrl-C, as a person stops it)."""
    kubelet_dir = Path(tempfile.mkdtemp(prefix="k", dir="/tmp"))  # unix socket paths must stay short
    env = {**os.environ, "GPUDRA_MIG_MODE": "dynamic", "OTEL_SDK_DISABLED": "true"}
    args = ["up", "--state-dir", str(root), "--kubelet-dir", str(kubelet_dir), "--node", NODE, "--profile", PROFILE]
    up = await _gpudra(*args, env=env)
    try:
        await _until_up(up, root / "logs" / "supervisor.log")
        yield Soak(root, kubelet_dir, up, endpoints.read(root))
    finally:
        if up.returncode is None:
            up.send_signal(signal.SIGINT)
            await asyncio.wait_for(up.wait(), 60)
        shutil.rmtree(kubelet_dir, ignore_errors=True)


async def _until_up(up: asyncio.subprocess.Process, log: Path, timeout: float = 90.0) -> None:
    assert up.stdout is not None
    seen: list[str] = []
    async with asyncio.timeout(timeout):
        while not seen or "Ctrl-C stops everything" not in seen[-1]:
            line = await up.stdout.readline()
            if not line:
                raise AssertionError(f"gpudra up ended before it was up:\n{''.join(seen)}")
            seen.append(line.decode())
    asyncio.get_running_loop().create_task(_drain(up, log))


async def _drain(up: asyncio.subprocess.Process, log: Path) -> None:
    """Keep its output (the supervisor's log) in ``log``, so the supervisor never blocks on a full pipe."""
    assert up.stdout is not None
    with log.open("ab") as out:
        while line := await up.stdout.readline():
            out.write(line)
            out.flush()
