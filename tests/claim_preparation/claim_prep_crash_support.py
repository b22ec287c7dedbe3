"""The pieces of the kill -9 crash-cycle test: the service as a real process, a kubelet that retries, a killer,
and an audit of what the node holds at the end.

- ``ServiceRunner`` runs ``services.claim_preparation``'s real entry point in a child process and can SIGKILL
  and restart it. A spare child has already imported the service and waits for a "go" line on stdin, so a
  restart costs what the service itself does when it starts (connect, load the checkpoint, roll back, serve),
  not the ~0.7 s of Python imports: that keeps many kills inside the test's time budget.
- ``CrashRun`` drives claims through prepare/unprepare cycles with the kubelet-like gRPC client, as the
  kubelet does: a call without a definitive answer is asked again until it gets one. A call in flight when the
  service is killed is given up at once (the kubelet would wait for its deadline, then retry: same outcome,
  less waiting). Meanwhile a killer sends SIGKILL at random moments, seeded, scaled to the observed latency.
- ``snapshot`` reads the node (checkpoint files, CDI specs, simulated GPUs, MPS directories, the claim events in
  JetStream) and ``audit`` compares it with what the client believes: a list of problems, empty when consistent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import statistics
import sys
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

import msgspec
import pytest
from nats.js import JetStreamContext, api
from nats.js.api import PubAck

from libs.bus import Bus
from libs.devices.model import MigDevice, TimeSliceInterval
from libs.devices.simulated.state import GpuSim, StateStore
from libs.events import Event
from libs.events.catalogue import ClaimRef
from libs.kube import KubeApi
from libs.kubeletclient import KubeletClient, KubeletClientError
from services.claim_preparation.checkpoint import SUFFIX, CheckpointError, decode
from services.claim_preparation.devices import MigTarget
from services.claim_preparation.record import PREPARE_COMPLETED, ClaimRecord, MpsPlan, TimeSlicePlan
from services.claim_preparation.service import running
from services.claim_preparation.settings import Settings
from services.kubelet_shim.service import serve
from tests.claim_preparation.claim_prep_support import (
    DRIVER,
    NODE,
    gpu_config,
    mig_config,
    opaque,
    service_settings,
    store_claim,
)
from tests.kubelet_shim.shim_support import shim_settings, short_dir

REPO = Path(__file__).resolve().parents[2]
CHILD_SETTINGS = "GPUDRA_TEST_CRASH_CHILD_SETTINGS"
"""JSON of settings the crash child overrides (``crash_at``'s ``child_settings``)."""
SPEC_PREFIX = f"k8s.{DRIVER}-claim_"
READY = "service ready"
ROLLBACK = "left by the last run"
"""The start-up log line of a claim a kill left half prepared or half unprepared (preparer.py ``_reconcile``)."""

# The service's real entry point, started when the parent says so (see ``ServiceRunner``).
_PRELOADED = "import sys; from services.claim_preparation.__main__ import main; sys.stdin.readline(); main()"

Operation = Literal["prepare", "unprepare"]
Answer = tuple[str, Any]
"""A call's per-claim error (empty on success) and its devices."""


# --- the claims ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CrashClaim:
    """A claim of the test: its allocated (request, device) pairs and opaque configs."""

    name: str
    devices: tuple[tuple[str, str], ...]
    configs: tuple[dict[str, Any], ...] = ()

    @property
    def device_names(self) -> list[str]:
        return [device for _, device in self.devices]

    @property
    def dynamic_mig(self) -> list[str]:
        """MIG devices this claim creates (GPU 3 of the ``mixed-mig`` profile has MIG on and none created)."""
        return [device for device in self.device_names if device.startswith("gpu-3-mig-")]


_MPS_GPU = opaque(gpu_config(strategy="MPS", mpsConfig={"defaultActiveThreadPercentage": 50}))
_MPS_MIG = opaque(mig_config(strategy="MPS", mpsConfig={"defaultPinnedDeviceMemoryLimit": "4Gi"}))
_LONG_SLICES = opaque(gpu_config(strategy="TimeSlicing", timeSlicingConfig={"interval": "Long"}))

CLAIMS: tuple[CrashClaim, ...] = (
    CrashClaim("whole-4", (("gpu", "gpu-4"),)),
    CrashClaim("sliced-5", (("gpu", "gpu-5"),), (_LONG_SLICES,)),
    CrashClaim("mps-6", (("gpu", "gpu-6"),), (_MPS_GPU,)),
    # two GPUs' locks: gpu-0 is shared (by lock, not by device) with static-0
    CrashClaim("pair-7", (("gpu", "gpu-7"), ("mig", "gpu-0-mig-1g10gb-19-1"))),
    CrashClaim("static-0", (("mig", "gpu-0-mig-1g10gb-19-0"),)),
    CrashClaim("static-mps-1", (("mig", "gpu-1-mig-3g40gb-9-0"),), (_MPS_MIG,)),
    # dynamic MIG on GPU 3, placements that do not overlap: created at prepare, destroyed at unprepare
    CrashClaim("dyn-1g-0", (("mig", "gpu-3-mig-1g10gb-19-0"),)),
    CrashClaim("dyn-1g-1", (("mig", "gpu-3-mig-1g10gb-19-1"),)),
    CrashClaim("dyn-2g-2", (("mig", "gpu-3-mig-2g20gb-14-2"),)),
    CrashClaim("dyn-mps-3g-4", (("mig", "gpu-3-mig-3g40gb-9-4"),), (_MPS_MIG,)),
)

STATIC_MIG = frozenset(
    {
        *(f"gpu-0-mig-1g10gb-19-{n}" for n in range(7)),
        "gpu-1-mig-3g40gb-9-0",
        "gpu-1-mig-2g20gb-14-4",
        "gpu-1-mig-1g10gb-19-6",
        "gpu-2-mig-4g40gb-5-0",
        "gpu-2-mig-3g40gb-9-4",
    }
)
"""The operator's MIG devices of the ``mixed-mig`` profile: never destroyed by the driver."""


async def store_claims(kube: KubeApi, claims: Sequence[CrashClaim]) -> dict[str, tuple[CrashClaim, ClaimRef]]:
    """Allocated claims in the standalone store, by UID."""
    stored: dict[str, tuple[CrashClaim, ClaimRef]] = {}
    for claim in claims:
        ref = await store_claim(kube, claim.name, claim.devices, claim.configs)
        stored[ref.uid] = (claim, ref)
    return stored


def process_env(settings: Settings) -> dict[str, str]:
    """The ``GPUDRA_*`` environment that makes the process use ``settings`` (the tests' in-process settings)."""
    values = {
        "nats_url": settings.nats_url,
        "nats_creds": settings.nats_creds,
        "node_name": settings.node_name,
        "state_dir": settings.state_dir,
        "cdi_dir": settings.cdi_dir,
        "simulated_dir": settings.simulated_dir,
        "backend": settings.backend,
        "profile": settings.profile,
        "mig_mode": settings.mig_mode,
        "passthrough_gpus": settings.passthrough_gpus,
        "kube_mode": settings.kube_mode,
        "boot_id_path": settings.boot_id_path,
        "metrics_port": str(settings.metrics_port),
        "log_format": "json",
        "log_level": "INFO",
    }
    return {
        **os.environ,
        **{f"GPUDRA_{name.upper()}": str(value) for name, value in values.items()},
        "OTEL_SDK_DISABLED": "true",
    }


# --- the service process ------------------------------------------------------------------------------------


class ServiceDied(AssertionError):
    """The service ended on its own (not killed by the test): a crash at start, a bug."""


@dataclass(eq=False)
class Generation:
    """One run of the service process, from "go" to its death."""

    number: int
    process: asyncio.subprocess.Process
    went_at: float
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    dead: asyncio.Event = field(default_factory=asyncio.Event)
    killed: bool = False
    startup_s: float | None = None
    log: deque[str] = field(default_factory=lambda: deque(maxlen=200))
    rollbacks: Counter[str] = field(default_factory=Counter)
    """States of the records it rolled back at start (``PrepareStarted``...): where kills had landed."""

    @property
    def pid(self) -> int:
        return self.process.pid

    def tail(self, lines: int = 40) -> str:
        return "\n".join(list(self.log)[-lines:])


class ServiceRunner:
    """claim_preparation as a child process that the test starts, SIGKILLs and starts again."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = dict(env)
        self._spare: asyncio.subprocess.Process | None = None
        self._pumps: set[asyncio.Task[None]] = set()
        self.current: Generation | None = None
        self.generations: list[Generation] = []

    async def __aenter__(self) -> Self:
        self._spare = await self._spawn()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def _spawn(self) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _PRELOADED,
            cwd=REPO,
            env=self._env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )

    async def start(self) -> Generation:
        """Let the spare run the service (a new spare starts importing); returns before it is ready."""
        process = self._spare or await self._spawn()
        self._spare = await self._spawn()
        assert process.stdin is not None
        process.stdin.write(b"go\n")
        await process.stdin.drain()
        process.stdin.close()
        generation = Generation(number=len(self.generations), process=process, went_at=time.perf_counter())
        self.generations.append(generation)
        self.current = generation
        pump = asyncio.create_task(self._pump(generation))
        self._pumps.add(pump)
        pump.add_done_callback(self._pumps.discard)
        return generation

    async def _pump(self, generation: Generation) -> None:
        """Read the process's log (a full pipe would block it) and note readiness, rollbacks and its death."""
        stdout = generation.process.stdout
        assert stdout is not None
        while line := await stdout.readline():
            text = line.decode(errors="replace").rstrip()
            generation.log.append(text)
            if READY in text and not generation.ready.is_set():
                generation.startup_s = time.perf_counter() - generation.went_at
                generation.ready.set()
            elif ROLLBACK in text:
                message = _message(text)
                generation.rollbacks[message.split(" a ", 1)[-1].split(" ", 1)[0]] += 1
        await generation.process.wait()
        generation.dead.set()

    async def kill(self, generation: Generation) -> None:
        """SIGKILL, and wait until the process is gone (so no request reaches it any more)."""
        generation.killed = True
        with contextlib.suppress(ProcessLookupError):
            generation.process.send_signal(signal.SIGKILL)
        await generation.process.wait()
        await generation.dead.wait()

    async def stop(self, generation: Generation, timeout: float = 15) -> int:
        """SIGTERM: the clean way out; returns the exit code."""
        generation.killed = True
        with contextlib.suppress(ProcessLookupError):
            generation.process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(timeout):
            code = await generation.process.wait()
            await generation.dead.wait()
        return code

    def check_alive(self, generation: Generation) -> None:
        if generation.dead.is_set() and not generation.killed:
            raise ServiceDied(
                f"claim_preparation (generation {generation.number}, pid {generation.pid}) exited with "
                f"{generation.process.returncode} on its own:\n{generation.tail()}"
            )

    async def close(self) -> None:
        for process in [g.process for g in self.generations] + ([self._spare] if self._spare else []):
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        self._spare = None
        for pump in list(self._pumps):
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump


def _message(line: str) -> str:
    try:
        return str(json.loads(line).get("msg", ""))
    except ValueError:
        return line


# --- the kubelet and the killer -----------------------------------------------------------------------------


@dataclass
class ClaimProgress:
    """What the client knows about one claim."""

    claim: CrashClaim
    ref: ClaimRef
    prepared: bool = False
    prepares: int = 0
    """Prepares that succeeded, each from a claim the client knew unprepared: one PrepareCompleted each."""
    unprepares: int = 0
    answers: set[tuple[tuple[str, tuple[str, ...]], ...]] = field(default_factory=set)
    """Distinct prepare answers (device, CDI ids): one expected, however many retries and restarts."""


@dataclass
class RunStats:
    kills: int = 0
    kills_at_start: int = 0
    kills_inside_calls: int = 0
    inflight_at_kill: Counter[str] = field(default_factory=Counter)
    abandoned: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    """Per-claim errors the client was answered with, by kind (the text after the claim's name)."""
    calls: Counter[str] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)
    startups_ms: list[float] = field(default_factory=list)
    rollbacks: Counter[str] = field(default_factory=Counter)
    violations: list[str] = field(default_factory=list)
    """Facts that did not hold right after an answer (spec and record there after prepare, gone after unprepare)."""

    def summary(self) -> str:
        latency = statistics.median(self.latencies_ms) if self.latencies_ms else 0.0
        startup = statistics.median(self.startups_ms) if self.startups_ms else 0.0
        return (
            f"{self.kills} kills ({self.kills_inside_calls} with calls in flight: {dict(self.inflight_at_kill)}; "
            f"{self.kills_at_start} during start-up); rolled back at start: {dict(self.rollbacks)}; "
            f"calls: {dict(self.calls)}; abandoned: {dict(self.abandoned)}; errors: {dict(self.errors)}; "
            f"p50 call {latency:.1f} ms, p50 start {startup:.0f} ms"
        )


def error_kind(error: str) -> str:
    """The error without the claim's name and UID, so that errors of many claims count together."""
    problem = error.split("): ", 1)[-1]
    for marker in ("is unreachable", "timed out", "no result for it"):
        if marker in problem:
            return f"claim_preparation {marker}"
    return problem[:160]


TRANSIENT_ERRORS = frozenset({"claim_preparation is unreachable", "claim_preparation timed out"})
"""What a kill may cause: the shim finds nobody to ask (the kubelet retries). Anything else is a finding."""


class CrashRun:
    """Claims cycling through prepare and unprepare while a killer SIGKILLs the service at random moments."""

    def __init__(
        self,
        *,
        runner: ServiceRunner,
        client: KubeletClient,
        settings: Settings,
        claims: Mapping[str, tuple[CrashClaim, ClaimRef]],
        rng: random.Random,
        kill: bool = True,
        completions_between_kills: float = 8,
        startup_kill_share: float = 0.12,
    ) -> None:
        self.runner = runner
        self.client = client
        self.settings = settings
        self.rng = rng
        self.kill = kill
        self.completions_between_kills = completions_between_kills
        self.startup_kill_share = startup_kill_share
        self.progress = {uid: ClaimProgress(claim, ref) for uid, (claim, ref) in claims.items()}
        self.stats = RunStats()
        self._serving = asyncio.Event()
        self._finished = asyncio.Event()
        self._completions = 0
        self._completed = asyncio.Condition()
        self._inflight: Counter[str] = Counter()
        self._recent_ms: deque[float] = deque(maxlen=50)

    # -- the whole run --

    async def run(self, cycles: Mapping[str, int], end_prepared: set[str]) -> RunStats:
        """``cycles[uid]`` prepare/unprepare cycles per claim, all claims at once; then the claims in
        ``end_prepared`` are prepared once more, so the end state holds prepared and unprepared claims."""
        await self._start()
        killer = asyncio.create_task(self._killer() if self.kill else self._watch())
        workers = [asyncio.create_task(self._cycle(uid, n, uid in end_prepared)) for uid, n in cycles.items()]
        all_workers = asyncio.gather(*workers)
        either: list[asyncio.Future[Any]] = [killer, all_workers]
        try:
            # The workers finish the run; the killer only ends early with an error (ServiceDied).
            done, _ = await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
            if killer in done:
                raise AssertionError("the killer stopped before the workers finished")
        finally:
            self._finished.set()
            async with self._completed:
                self._completed.notify_all()
            for task in workers:
                task.cancel()
            await asyncio.gather(killer, all_workers, return_exceptions=True)
        for generation in self.runner.generations:
            self.stats.rollbacks.update(generation.rollbacks)
        return self.stats

    async def _start(self) -> None:
        generation = await self.runner.start()
        await _first(generation.ready.wait(), generation.dead.wait())
        self.runner.check_alive(generation)
        if generation.startup_s is not None:
            self.stats.startups_ms.append(generation.startup_s * 1000)
        if generation.ready.is_set() and not generation.dead.is_set():
            self._serving.set()

    # -- the killer --

    async def _killer(self) -> None:
        while not self._finished.is_set():
            generation = self.runner.current
            assert generation is not None
            if not self._serving.is_set():
                await self._start()
                continue
            target = self._completions + self.rng.randint(0, int(2 * self.completions_between_kills))
            await _first(self._completions_reach(target), generation.dead.wait())
            self.runner.check_alive(generation)
            if await self._pause(self.rng.uniform(0, 1.5 * self.latency_s())):
                return
            self.runner.check_alive(generation)
            await self._kill(generation)
            if self.rng.random() < self.startup_kill_share:
                await self._kill_during_start()

    async def _completions_reach(self, target: int) -> None:
        async with self._completed:
            await self._completed.wait_for(lambda: self._completions >= target or self._finished.is_set())

    async def _kill(self, generation: Generation) -> None:
        self._serving.clear()
        inflight = +self._inflight  # the calls in flight now (zero counts dropped)
        if inflight:
            self.stats.kills_inside_calls += 1
            self.stats.inflight_at_kill.update(inflight)
        self.stats.kills += 1
        await self.runner.kill(generation)

    async def _kill_during_start(self) -> None:
        """Start the service and kill it before or while it loads the checkpoint and rolls claims back."""
        generation = await self.runner.start()
        startup = statistics.median(self.stats.startups_ms) / 1000 if self.stats.startups_ms else 0.2
        await _first(self._pause(self.rng.uniform(0, startup)), generation.dead.wait())
        self.runner.check_alive(generation)
        self.stats.kills_at_start += 1
        await self._kill(generation)

    async def _watch(self) -> None:
        """No killing: only notice a service that dies on its own."""
        generation = self.runner.current
        assert generation is not None
        await _first(self._finished.wait(), generation.dead.wait())
        self.runner.check_alive(generation)

    async def _pause(self, seconds: float) -> bool:
        """The killer's random delay; True when the run finished meanwhile."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._finished.wait(), seconds)
        return self._finished.is_set()

    def latency_s(self) -> float:
        """The median of recent successful calls: kill delays are drawn on this scale."""
        return statistics.median(self._recent_ms) / 1000 if self._recent_ms else 0.05

    # -- the kubelet --

    async def _cycle(self, uid: str, cycles: int, end_prepared: bool) -> None:
        for _ in range(cycles):
            await self.prepare(uid)
            await self.unprepare(uid)
        if end_prepared:
            await self.prepare(uid)

    async def prepare(self, uid: str) -> None:
        progress = self.progress[uid]
        ref = progress.ref
        result = await self._until_answered("prepare", lambda: self._prepare_once(ref))
        answer = tuple((d.device_name, d.cdi_device_ids) for d in result)
        expected = tuple((d, (f"k8s.{DRIVER}/claim={ref.uid}-{d}",)) for d in progress.claim.device_names)
        if answer != expected:
            self.stats.violations.append(f"claim {progress.claim.name}: prepared as {answer}, expected {expected}")
        progress.answers.add(answer)
        progress.prepared = True
        progress.prepares += 1
        self._check_files(uid, present=True)

    async def unprepare(self, uid: str) -> None:
        progress = self.progress[uid]
        ref = progress.ref
        await self._until_answered("unprepare", lambda: self._unprepare_once(ref))
        progress.prepared = False
        progress.unprepares += 1
        self._check_files(uid, present=False)

    async def _prepare_once(self, ref: ClaimRef) -> Answer:
        result = (await self.client.prepare([(ref.namespace, ref.name, ref.uid)]))[ref.uid]
        return result.error, result.devices

    async def _unprepare_once(self, ref: ClaimRef) -> Answer:
        result = (await self.client.unprepare([(ref.namespace, ref.name, ref.uid)]))[ref.uid]
        return result.error, None

    async def _until_answered(self, operation: Operation, call: Callable[[], Coroutine[Any, Any, Answer]]) -> Any:
        """Ask until the answer is a success, as the kubelet does; give a call up when the service is killed."""
        backoff = 0.005
        while True:
            await self._serving.wait()
            generation = self.runner.current
            assert generation is not None
            self.stats.calls[operation] += 1
            self._inflight[operation] += 1
            began = time.perf_counter()
            task = asyncio.create_task(call())
            try:
                await _first(asyncio.shield(task), generation.dead.wait())
            finally:
                self._inflight[operation] -= 1
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
                self.stats.abandoned[operation] += 1
                continue
            try:
                error, answer = task.result()
            except KubeletClientError as exc:
                error, answer = f"(call failed): {exc}", None
            if not error:
                elapsed = (time.perf_counter() - began) * 1000
                self._recent_ms.append(elapsed)
                self.stats.latencies_ms.append(elapsed)
                async with self._completed:
                    self._completions += 1
                    self._completed.notify_all()
                return answer
            self.stats.errors[error_kind(error)] += 1
            if generation.dead.is_set():
                continue  # the next generation is awaited at the top
            # Served, yet nobody answered: a subscription not yet visible right after a start (see
            # claim_prep_support.until_answering), or an error the kubelet would retry after its back-off.
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 0.2)

    def _check_files(self, uid: str, *, present: bool) -> None:
        """Right after an answer about a claim only its own worker touches, its spec and record must agree."""
        spec = Path(self.settings.cdi_dir) / f"{SPEC_PREFIX}{uid}.json"
        record = self.settings.checkpoint_path / "claims" / f"{uid}{SUFFIX}"
        what = "prepared" if present else "unprepared"
        for path in (spec, record):
            if path.exists() != present:
                self.stats.violations.append(
                    f"claim {self.progress[uid].claim.name}: {path.name} {'missing' if present else 'still there'} "
                    f"right after the client was told it was {what}"
                )


async def _first(*awaitables: Awaitable[object]) -> None:
    """Wait until one of ``awaitables`` is done; cancel the others (never a shielded task's inner work)."""
    tasks = [asyncio.ensure_future(a) for a in awaitables]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            if not task.done():
                task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                if task.done() and not task.cancelled():
                    task.exception()


# --- what the node holds --------------------------------------------------------------------------------------


class ClaimEvent(msgspec.Struct, frozen=True):
    kind: str
    uid: str
    devices: tuple[str, ...] = ()


@dataclass
class NodeSnapshot:
    records: dict[str, ClaimRecord]
    checkpoint_leftovers: list[str]
    """Files in the checkpoint directory that are not readable records (temporaries, ``.corrupt``)."""
    specs: dict[str, set[str]]
    """CDI file name -> the CDI device names it holds (empty when unreadable)."""
    mig_devices: list[MigDevice]
    sims: dict[int, GpuSim]
    mps_dirs: list[str]
    """``<uid>/<group>`` directories under the MPS root."""
    events: list[ClaimEvent]


async def snapshot(settings: Settings, js: JetStreamContext) -> NodeSnapshot:
    records: dict[str, ClaimRecord] = {}
    leftovers: list[str] = []
    claims_dir = settings.checkpoint_path / "claims"
    for path in sorted(claims_dir.iterdir()) if claims_dir.is_dir() else []:
        try:
            record = decode(path.read_bytes(), str(path))
        except CheckpointError:
            leftovers.append(path.name)
            continue
        if path.name != f"{record.uid}{SUFFIX}":
            leftovers.append(path.name)
        else:
            records[record.uid] = record
    specs: dict[str, set[str]] = {}
    cdi_dir = Path(settings.cdi_dir)
    for path in sorted(cdi_dir.iterdir()) if cdi_dir.is_dir() else []:
        try:
            specs[path.name] = {device["name"] for device in json.loads(path.read_text())["devices"]}
        except (ValueError, KeyError, TypeError):
            specs[path.name] = set()
    state = StateStore(settings.simulated_state).read()
    assert state is not None, "the simulated machine is gone"
    mps_root = settings.mps_path
    mps_dirs = sorted(str(p.relative_to(mps_root)) for p in mps_root.glob("*/*")) if mps_root.is_dir() else []
    return NodeSnapshot(
        records=records,
        checkpoint_leftovers=leftovers,
        specs=specs,
        mig_devices=list(state.mig_devices),
        sims=dict(state.sims),
        mps_dirs=mps_dirs,
        events=await claim_events(js),
    )


async def claim_events(js: JetStreamContext) -> list[ClaimEvent]:
    """Every claim event of the node in JetStream, in stream order: what a consumer of the stream sees."""
    subject = f"gpudra.v1.{NODE}.claims.>"
    info = await js.stream_info("GPUDRA_CLAIMS", subjects_filter=subject)
    wanted = sum((info.state.subjects or {}).values())
    events: list[ClaimEvent] = []
    if not wanted:
        return events
    subscription = await js.subscribe(subject, ordered_consumer=True, deliver_policy=api.DeliverPolicy.ALL)
    try:
        while len(events) < wanted:
            msg = await subscription.next_msg(timeout=5)
            kind = (msg.headers or {}).get("ce-type", "").split(".")[2]
            data = msgspec.json.decode(msg.data)
            devices = tuple(d["device"] for d in data.get("devices", ()))
            events.append(ClaimEvent(kind, data["claim"]["uid"], devices))
    finally:
        await subscription.unsubscribe()
    return events


# --- the audit ------------------------------------------------------------------------------------------------


def audit(node: NodeSnapshot, progress: Mapping[str, ClaimProgress]) -> list[str]:
    """Everything on the node (``audit_state``) and in the event stream (``audit_events``) that disagrees with
    what the client believes; empty when consistent."""
    return audit_state(node, progress) + audit_events(node, progress)


def audit_state(node: NodeSnapshot, progress: Mapping[str, ClaimProgress]) -> list[str]:
    """Checkpoint, CDI specs, MIG devices, sharing settings and MPS directories against the client's belief."""
    prepared = {uid for uid, p in progress.items() if p.prepared}
    return (
        _audit_records(node, progress, prepared)
        + _audit_specs(node, progress, prepared)
        + _audit_mig(node, progress, prepared)
        + _audit_sharing(node, progress, prepared)
    )


def _audit_records(node: NodeSnapshot, progress: Mapping[str, ClaimProgress], prepared: set[str]) -> list[str]:
    problems = [f"checkpoint directory holds leftover {name}" for name in node.checkpoint_leftovers]
    for uid, held in node.records.items():
        if uid not in prepared:
            name = progress[uid].claim.name if uid in progress else "(unknown)"
            problems.append(f"checkpoint holds claim {name} ({held.state}) that the client believes unprepared")
    for uid in sorted(prepared):
        claim = progress[uid].claim
        record = node.records.get(uid)
        if record is None:
            problems.append(f"claim {claim.name} is prepared for the client but has no checkpoint record")
            continue
        if record.state != PREPARE_COMPLETED:
            problems.append(f"claim {claim.name}: its checkpoint record is {record.state}, not {PREPARE_COMPLETED}")
        if sorted(d.target.name for d in record.devices) != sorted(claim.device_names):
            problems.append(
                f"claim {claim.name}: the checkpoint names devices {[d.target.name for d in record.devices]}"
            )
        answered = {tuple((d.device, tuple(d.cdi_device_ids)) for d in record.prepared)}
        if progress[uid].answers != answered:
            problems.append(f"claim {claim.name}: answered {progress[uid].answers}, the checkpoint says {answered}")
    problems += [
        f"claim {p.claim.name} got {len(p.answers)} different prepare answers: {sorted(p.answers)}"
        for uid, p in progress.items()
        if uid not in prepared and len(p.answers) > 1
    ]
    holders = Counter(name for r in node.records.values() for name in {d.target.name for d in r.devices})
    problems += [f"device {name} is in {count} checkpoint records" for name, count in holders.items() if count > 1]
    return problems


def _audit_specs(node: NodeSnapshot, progress: Mapping[str, ClaimProgress], prepared: set[str]) -> list[str]:
    problems: list[str] = []
    for name, devices in node.specs.items():
        uid = name.removeprefix(SPEC_PREFIX).removesuffix(".json")
        if not name.startswith(SPEC_PREFIX) or not name.endswith(".json") or uid not in prepared:
            problems.append(f"CDI file {name} belongs to no prepared claim")
        elif uid not in node.records:
            problems.append(f"CDI file {name} has no checkpoint record")
        elif devices != {f"{uid}-{d}" for d in progress[uid].claim.device_names}:
            problems.append(f"CDI file {name} holds devices {sorted(devices)}")
    for uid in sorted(prepared):
        if f"{SPEC_PREFIX}{uid}.json" not in node.specs:
            problems.append(f"claim {progress[uid].claim.name} is prepared for the client but has no CDI spec")
    return problems


def _audit_mig(node: NodeSnapshot, progress: Mapping[str, ClaimProgress], prepared: set[str]) -> list[str]:
    problems: list[str] = []
    counts = Counter(device.name for device in node.mig_devices)
    problems += [f"MIG device {name} exists {n} times" for name, n in counts.items() if n > 1]
    wanted = {name: uid for uid in prepared for name in progress[uid].claim.dynamic_mig}
    for device in node.mig_devices:
        if device.name in STATIC_MIG:
            continue
        uid = wanted.get(device.name)
        if uid is None:
            problems.append(f"MIG device {device.name} is left over: no prepared claim uses it")
            continue
        record = node.records.get(uid)
        targets = [d.target for d in record.devices if d.target.name == device.name] if record else []
        if not any(
            isinstance(t, MigTarget) and (t.uuid, t.gi_id, t.ci_id) == (device.uuid, device.gi_id, device.ci_id)
            for t in targets
        ):
            problems.append(f"MIG device {device.name} ({device.uuid}) does not match its claim's checkpoint record")
    problems += [f"static MIG device {name} was destroyed" for name in sorted(STATIC_MIG - set(counts))]
    problems += [
        f"claim {progress[uid].claim.name} is prepared for the client but MIG device {name} does not exist"
        for name, uid in sorted(wanted.items())
        if name not in counts
    ]
    return problems


def _audit_sharing(node: NodeSnapshot, progress: Mapping[str, ClaimProgress], prepared: set[str]) -> list[str]:
    """Time-slicing and MPS settings on the GPUs, and MPS directories: there exactly for the prepared claims."""
    sliced: set[int] = set()
    mps: set[int] = set()
    mps_dirs: set[str] = set()
    for uid in prepared:
        record = node.records.get(uid)
        for plan in record.sharing if record else ():
            if isinstance(plan, TimeSlicePlan) and plan.interval != TimeSliceInterval.DEFAULT:
                sliced.update(plan.minors)
            elif isinstance(plan, MpsPlan):
                mps.update(plan.minors)
                mps_dirs.add(f"{uid}/{plan.group}")
    problems: list[str] = []
    for minor, sim in sorted(node.sims.items()):
        if (sim.time_slice != TimeSliceInterval.DEFAULT) != (minor in sliced):
            problems.append(
                f"gpu-{minor} time slice is {sim.time_slice}, prepared claims want it on: {minor in sliced}"
            )
        if (sim.mps is not None) != (minor in mps):
            problems.append(
                f"gpu-{minor} MPS is {'on' if sim.mps else 'off'}, prepared claims want it on: {minor in mps}"
            )
    problems += [f"MPS directory {d} has no prepared claim" for d in sorted(set(node.mps_dirs) - mps_dirs)]
    problems += [f"MPS directory {d} of a prepared claim is missing" for d in sorted(mps_dirs - set(node.mps_dirs))]
    return problems


def audit_events(node: NodeSnapshot, progress: Mapping[str, ClaimProgress]) -> list[str]:
    """The claim events against the transitions the client saw.

    Counted per claim, in stream order: each prepare the client saw succeed (from a claim it knew unprepared) is
    one transition to PrepareCompleted and needs at least one ``ClaimPrepared`` naming the claim's devices
    (duplicates are allowed: delivery is at-least-once); the same for unprepare and ``ClaimUnprepared``; and
    the last of the two that a claim has must say what the node has now.
    """
    problems: list[str] = []
    counts: Counter[tuple[str, str]] = Counter((e.kind, e.uid) for e in node.events)
    last: dict[str, str] = {}
    for event in node.events:
        if event.kind in ("ClaimPrepared", "ClaimUnprepared"):
            last[event.uid] = event.kind
        if event.uid not in progress:
            problems.append(f"{event.kind} for unknown claim uid {event.uid}")
        elif event.kind == "ClaimPrepared" and sorted(event.devices) != sorted(progress[event.uid].claim.device_names):
            problems.append(f"ClaimPrepared of {progress[event.uid].claim.name} names devices {list(event.devices)}")
    for uid, p in sorted(progress.items(), key=lambda item: item[1].claim.name):
        for kind, needed in (("ClaimPrepared", p.prepares), ("ClaimUnprepared", p.unprepares)):
            if counts[(kind, uid)] < needed:
                problems.append(
                    f"claim {p.claim.name}: {counts[(kind, uid)]} {kind} events for {needed} "
                    f"{kind.removeprefix('Claim').lower()} transitions the client saw"
                )
        expected = "ClaimPrepared" if p.prepared else "ClaimUnprepared"
        if p.prepares and last.get(uid) != expected:
            problems.append(f"claim {p.claim.name}: its last event is {last.get(uid)}, the node has it {expected}")
    return problems


# --- a service that stops dead when it is about to publish an event ------------------------------------------


class _StallingBus(Bus):
    """The bus of a service that hangs when about to publish ``stall_at`` (kill -9 then lands right there)."""

    stall_at = ""

    async def publish(self, event: Event, *, event_id: str | None = None) -> PubAck:
        if type(event).__name__ == self.stall_at:
            print(f"AT {self.stall_at}", flush=True)
            await asyncio.Event().wait()
        return await super().publish(event, event_id=event_id)


async def _stalling_service(nats_url: str, root: Path, stall_at: str) -> None:
    """claim_preparation as in ``claim_prep_support.serving``, but its bus stalls at ``stall_at``."""
    settings = service_settings(root, nats_url)
    bus = await _StallingBus.connect(settings, "claim_preparation")
    assert isinstance(bus, _StallingBus)
    bus.stall_at = stall_at
    async with running(bus, settings) as service:
        await bus.serve("0.0.0-test", service.endpoints)
        await bus.nc.flush()
        print(STALLING_READY, flush=True)
        await asyncio.Event().wait()


STALLING_READY = "stalling service ready"


async def start_stalling_service(nats_url: str, root: Path, stall_at: str) -> asyncio.subprocess.Process:
    """``python -m tests.claim_preparation.claim_prep_crash_support NATS_URL ROOT EVENT``, once it serves."""
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.claim_preparation.claim_prep_crash_support",
        nats_url,
        str(root),
        stall_at,
        cwd=REPO,
        env={**os.environ, "OTEL_SDK_DISABLED": "true"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    await read_until(child, STALLING_READY)
    return child


async def read_until(child: asyncio.subprocess.Process, marker: str, timeout: float = 30) -> str:
    """The child's output up to the line holding ``marker``; fails with that output if the child ends first."""
    assert child.stdout is not None
    seen = ""
    async with asyncio.timeout(timeout):
        while marker not in seen:
            line = await child.stdout.readline()
            if not line:
                raise ServiceDied(f"the child ended before {marker!r}:\n{seen}")
            seen += line.decode(errors="replace")
    return seen


if __name__ == "__main__":
    asyncio.run(_stalling_service(sys.argv[1], Path(sys.argv[2]), sys.argv[3]))


async def crash_at(
    point: str, nats_url: str, root: Path, ref: ClaimRef, *, child_settings: Mapping[str, object] | None = None
) -> None:
    """Run the crash child (``claim_prep_crash_child``) until it reports ``point``, then kill -9 it;
    ``child_settings`` override the child's claim_preparation settings."""
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.claim_preparation.claim_prep_crash_child",
        nats_url,
        str(root),
        point,
        ref.uid,
        ref.name,
        cwd=REPO,
        env={**os.environ, "OTEL_SDK_DISABLED": "true", CHILD_SETTINGS: json.dumps(dict(child_settings or {}))},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert child.stdout is not None
    seen = b""
    try:
        async with asyncio.timeout(30):
            while f"AT {point}".encode() not in seen:
                line = await child.stdout.readline()
                if not line:
                    pytest.fail(f"the child ended before {point}:\n{seen.decode()}")
                seen += line
    finally:
        child.send_signal(signal.SIGKILL)
        await child.wait()


# --- a run, as the crash-cycle tests drive it ------------------------------------------------------------------


@asynccontextmanager
async def kubelet_and_service(settings: Settings, bus: Bus) -> AsyncIterator[tuple[KubeletClient, ServiceRunner]]:
    """The shim (in this process) registered with the kubelet-like client, and the service runner."""
    with short_dir("cc-") as kubelet_dir:
        async with (
            serve(bus, shim_settings(settings.nats_url, kubelet_dir)) as shim,
            ServiceRunner(process_env(settings)) as runner,
        ):
            client = await KubeletClient.register(shim.registration_socket.path, driver_name=DRIVER, call_timeout=30)
            async with client:
                yield client, runner


def share(cycles: int, uids: list[str]) -> dict[str, int]:
    """``cycles`` spread over the claims as evenly as it goes."""
    return {uid: cycles // len(uids) + (index < cycles % len(uids)) for index, uid in enumerate(uids)}


def findings(stats: RunStats) -> list[str]:
    """What went wrong during the run: broken facts right after answers, errors a kill cannot explain."""
    errors = [f"{n} x answered with error: {kind}" for kind, n in stats.errors.items() if kind not in TRANSIENT_ERRORS]
    return stats.violations + errors


SEED_VARIABLE = "GPUDRA_CRASH_SEED"


@dataclass
class RandomRun:
    """One crash-cycle run, done: its seed, the run (what the client believes), its stats and the node after."""

    seed: int
    run: CrashRun
    stats: RunStats
    node: NodeSnapshot

    def problems(self) -> list[str]:
        """Everything the run and the node's audit find, prefixed for the assertion message when not empty."""
        return (
            findings(self.stats)
            + audit_state(self.node, self.run.progress)
            + audit_events(self.node, self.run.progress)
        )


async def random_run(
    settings: Settings, bus: Bus, kube: KubeApi, claims: Sequence[CrashClaim], cycles: int
) -> RandomRun:
    """``cycles`` prepare/unprepare cycles spread over ``claims`` with SIGKILLs at random moments; the seed is
    printed and ``GPUDRA_CRASH_SEED=<seed>`` replays its choices. Half the claims, at random, end prepared."""
    seed = int(os.environ.get(SEED_VARIABLE) or random.randrange(2**32))
    print(f"crash test seed {seed} (replay: {SEED_VARIABLE}={seed})")
    rng = random.Random(seed)
    stored = await store_claims(kube, claims)
    uids = sorted(stored, key=lambda uid: stored[uid][0].name)
    end_prepared = set(rng.sample(uids, len(uids) // 2))
    async with kubelet_and_service(settings, bus) as (client, runner):
        run = CrashRun(runner=runner, client=client, settings=settings, claims=stored, rng=rng)
        stats = await run.run(share(cycles, uids), end_prepared)
        print(stats.summary())
        node = await snapshot(settings, bus.js)
    assert sum(p.unprepares for p in run.progress.values()) == cycles
    return RandomRun(seed=seed, run=run, stats=stats, node=node)
