"""Prepare and unprepare through the kubelet's path, beside the floor that path cannot go below, in one run.

The services run as real processes (``python -m services.claim_preparation`` on a simulated 8-GPU machine with
the standalone store, ``python -m services.kubelet_shim``) on an embedded nats-server; this process plays the
kubelet with the kubelet-like gRPC client (``libs.kubeletclient``).

- Latency: one caller, a claim of one whole GPU, prepare then unprepare, p50 and p99 of each.
- The floor, measured in the same rounds (alternating with the latency blocks, so machine noise hits both):
  the sum of the four things one prepare cannot avoid, each measured bare:
    1. an empty gRPC call over a unix socket (the kubelet to the shim), to a bare ``grpc.aio`` server in
       another process;
    2. an empty NATS request/reply (the shim to claim_preparation), raw nats-py on both ends, the responder in
       another process;
    3. an fsync'd atomic write of a checkpoint-sized file (temp file, write, fsync, rename, directory fsync);
    4. the same for a CDI-sized file, in the same directory.
  The sizes are those of the claim's real checkpoint record and CDI spec. The service also puts an event on
  the wire to JetStream (its ack is awaited after the answer), which the floor does not count. The lean floor
  replaces 3 and 4 with the same writes without fsync, which is what the service does since records and
  specs are reset by a reboot anyway (``libs/files``); the ratio is given against both.
- Throughput: 16 callers at once, each with its own claim, then all 16 unprepare; prepares/s over the prepare
  bursts. 16 claims hold the 8 GPUs at once through MIG: the simulated machine has two 3g.40gb MIG devices on
  each GPU and each claim gets one (shares of a whole GPU by consumable capacity are ``bench shares``'s). The
  two claims on one GPU take turns on its lock, as they would on a node.
- Where the time goes: the same prepare and unprepare straight over NATS (no gRPC, no shim), a bare JetStream
  publish + ack (what the event costs), the service's phase timings (the ``timings_ms`` that ``ClaimPrepared``
  carries), and the CPU milliseconds each process spent per prepare+unprepare cycle (from /proc).
- Memory: VmRSS and VmHWM of both services at the end.

Goals (2-core machine): p50 within 2x the floor, >= 600 prepares/s, each service under 100 MB RSS; with
``--system up``, at most 5 CPU-ms per cycle across gpudra's processes and nats-server.
``--cprofile DIR`` runs both services under cProfile and prints where their CPU time goes. ``--system up`` runs
the whole system instead, as ``gpudra up`` starts it (the supervisor, nats-server and every service, which all
see the claim's events), and reads the CPU time of each of its processes.

    python -m bench prepare [--rounds 30] [--calls 30] [--bursts 60] [--cprofile DIR | --system up]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import os
import pstats
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import grpc.aio
import msgspec
import nats
from nats.aio.client import Client
from nats.aio.msg import Msg

from bench._stats import pct
from bench._trust import SecuredServer
from cli import endpoints
from cli.claims import allocation, claim_object
from cli.shares import whole_devices
from libs.bus import Bus
from libs.events.catalogue import ClaimRef, PrepareClaims, PrepareClaimsReply, UnprepareClaims, UnprepareClaimsReply
from libs.kube import RESOURCE_CLAIMS, LocalKube
from libs.kubeletclient import KubeletClient
from libs.settings import CommonSettings
from libs.trust.authority import Authority
from libs.trust.permissions import EVERYTHING

NODE = "bench"
DRIVER = "gpu.gpudra.io"
LATENCY_GPU = "gpu-7"
CALLERS = 16
FLOOR_SUBJECT = "bench.floor"
FLOOR_METHOD = "/bench.Floor/Empty"
GOAL_RATIO = 2.0
GOAL_RATE = 600.0
GOAL_RSS_MB = 100.0
GOAL_CPU_MS = 5.0
NOT_THE_SYSTEM = ("kubelet (this process)", "floor")

PROFILE = """\
# 8 x H100, each split into two 3g.40gb MIG devices (static): 16 devices for 16 claims.
name: bench-h100-2x3g
gpu_model: H100-SXM5-80GB
gpu_count: 8
numa_nodes: 2
nvlink_links: 18
mig_enabled: all
mig_devices:
""" + "".join(f"  - {{gpu: {g}, profile: 3g.40gb, placement: {p}}}\n" for g in range(8) for p in (0, 4))

MIG_DEVICES = [f"gpu-{g}-mig-3g40gb-9-{p}" for g in range(8) for p in (0, 4)]


# --- the floor --------------------------------------------------------------------------------------------------


async def serve_floor(socket: str, nats_url: str, creds: str) -> None:
    """The floor's other end, in its own process: a bare gRPC server and a bare NATS responder, both empty."""

    async def empty(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        return b""

    server = grpc.aio.server()
    handler: grpc.RpcMethodHandler[bytes, bytes] = grpc.unary_unary_rpc_method_handler(empty)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("bench.Floor", {"Empty": handler}),))
    server.add_insecure_port(f"unix://{socket}")
    await server.start()
    nc = await nats.connect(nats_url, user_credentials=creds)

    async def respond(msg: Msg) -> None:
        await msg.respond(b"")

    await nc.subscribe(FLOOR_SUBJECT, cb=respond)
    await nc.flush()
    print("floor ready", flush=True)
    await asyncio.Event().wait()


def atomic_write(directory: Path, name: str, data: bytes, *, durable: bool = True) -> None:
    """What crash safety costs per file: temp file, write, rename over the target; ``durable``: with an fsync of
    the file and then of the directory, so that a power cut keeps it too."""
    temp = directory / f".{name}.tmp"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temp, directory / name)
    if not durable:
        return
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


# --- processes --------------------------------------------------------------------------------------------------


@dataclass
class Child:
    """A child process whose output is drained (a full pipe would stall it) and kept for error messages."""

    name: str
    process: asyncio.subprocess.Process
    log: list[str] = field(default_factory=list)
    _pump: asyncio.Task[None] | None = None

    @classmethod
    async def start(cls, name: str, args: Sequence[str], env: dict[str, str], ready: str) -> Child:
        process = await asyncio.create_subprocess_exec(
            *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        child = cls(name, process)
        try:
            await child._until(ready)
        except BaseException:
            process.kill()
            await process.wait()
            raise
        child._pump = asyncio.create_task(child._drain())
        return child

    async def _until(self, ready: str) -> None:
        assert self.process.stdout is not None
        async with asyncio.timeout(60):
            while not self.log or ready not in self.log[-1]:
                line = await self.process.stdout.readline()
                if not line:
                    raise RuntimeError(f"{self.name} exited before it was ready:\n" + "\n".join(self.log[-30:]))
                self.log.append(line.decode(errors="replace").rstrip())

    async def _drain(self) -> None:
        assert self.process.stdout is not None
        while line := await self.process.stdout.readline():
            self.log.append(line.decode(errors="replace").rstrip())
            del self.log[:-200]

    @property
    def pid(self) -> int:
        return self.process.pid

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(20):
                    await self.process.wait()
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        if self._pump is not None:
            await self._pump


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc/<pid>/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def memory_mb(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (peak RSS) of a process, in MB."""
    values: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024
    return values


def service_env(root: Path, nats_url: str, profile: Path) -> dict[str, str]:
    values = {
        "NATS_URL": nats_url,
        "NODE_NAME": NODE,
        "STATE_DIR": str(root / "state"),
        "CDI_DIR": str(root / "cdi"),
        "BACKEND": "simulated",
        "PROFILE": str(profile),
        "MIG_MODE": "static",
        "KUBE_MODE": "local",
        "KUBELET_DIR": str(root / "kubelet"),
        "METRICS_PORT": "-1",
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "INFO",  # the default: a log line per claim is part of the cost
    }
    return {**os.environ, **{f"GPUDRA_{k}": v for k, v in values.items()}, "OTEL_SDK_DISABLED": "true"}


def service_args(module: str, cprofile: Path | None) -> list[str]:
    if cprofile is None:
        return [sys.executable, "-m", module]
    return [sys.executable, "-m", "cProfile", "-o", str(cprofile / f"{module.rsplit('.', 1)[1]}.prof"), "-m", module]


# --- measuring --------------------------------------------------------------------------------------------------


async def timed(call: Callable[[], Awaitable[object]], count: int) -> list[float]:
    """Milliseconds of ``count`` calls made one after another."""
    samples = []
    for _ in range(count):
        began = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - began) * 1000)
    return samples


def timed_sync(call: Callable[[], object], count: int) -> list[float]:
    samples = []
    for _ in range(count):
        began = time.perf_counter()
        call()
        samples.append((time.perf_counter() - began) * 1000)
    return samples


FLOOR_PARTS = {
    "grpc": "empty gRPC call, unix socket",
    "nats": "empty NATS request/reply",
    "checkpoint": "fsync'd atomic write, checkpoint-sized",
    "cdi": "fsync'd atomic write, CDI-sized",
    "checkpoint-lean": "atomic write without fsync, checkpoint-sized",
    "cdi-lean": "atomic write without fsync, CDI-sized",
}
FLOOR = ("grpc", "nats", "checkpoint", "cdi")
LEAN_FLOOR = ("grpc", "nats", "checkpoint-lean", "cdi-lean")


DIAGNOSTICS = {
    "direct prepare": "prepare straight over NATS (no gRPC, no shim)",
    "direct unprepare": "unprepare straight over NATS",
    "publish": "JetStream publish + ack (the event)",
}
DIAGNOSTIC_SUBJECT = "gpudra.v1.bench-diagnostic.claims.unprepared"


@dataclass
class Results:
    floor: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in FLOOR_PARTS})
    prepare: list[float] = field(default_factory=list)
    unprepare: list[float] = field(default_factory=list)
    diagnostics: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in DIAGNOSTICS})
    burst_prepare_s: list[float] = field(default_factory=list)
    burst_unprepare_s: list[float] = field(default_factory=list)
    burst_calls: list[float] = field(default_factory=list)
    cpu_latency: dict[str, float] = field(default_factory=dict)
    cpu_burst: dict[str, float] = field(default_factory=dict)
    phases: dict[str, list[float]] = field(default_factory=dict)
    memory: dict[str, dict[str, float]] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)
    cycles: int = 0
    bursts: int = 0


class PhaseLog:
    """``timings_ms`` of every ClaimPrepared while ``recording``: where the service's own time goes."""

    def __init__(self) -> None:
        self.recording = False
        self.phases: dict[str, list[float]] = {}

    async def on_message(self, msg: Msg) -> None:
        if self.recording:
            for phase, ms in msgspec.json.decode(msg.data).get("timings_ms", {}).items():
                self.phases.setdefault(phase, []).append(ms)


@dataclass(frozen=True)
class System:
    bus: Bus
    nats_url: str
    creds: str
    """The bench's own credentials (it plays the kubelet and the floor's raw clients)."""
    floor_socket: str
    pids: dict[str, int]
    """Whose CPU time is read: claim_preparation, kubelet_shim and nats-server, or every process of ``up``."""
    state_dir: Path
    cdi_dir: Path


@contextlib.asynccontextmanager
async def system(root: Path, cprofile: Path | None) -> AsyncIterator[System]:
    """nats-server, the floor's far end, claim_preparation and the shim, all running; stopped on the way out."""
    secured = SecuredServer(root)
    server = secured.server
    await server.start()
    bus = await Bus.connect(secured.settings("bench", NODE), "bench")
    await bus.bootstrap()
    creds = secured.creds("bench", NODE)
    profile = root / "profile.yaml"
    profile.write_text(PROFILE)
    env = service_env(root, server.url, profile)
    children: dict[str, Child] = {}
    floor_socket = str(root / "floor.sock")
    try:
        children["floor"] = await Child.start("floor", floor_args(floor_socket, server.url, creds), env, "floor ready")
        for name, ready in (("claim_preparation", "service ready"), ("kubelet_shim", "serving the kubelet")):
            own = {**env, "GPUDRA_NATS_CREDS": secured.creds(name, NODE)}
            children[name] = await Child.start(name, service_args(f"services.{name}", cprofile), own, ready)
        assert server.pid is not None
        pids = {name: children[name].pid for name in ("claim_preparation", "kubelet_shim")} | {
            "nats-server": server.pid
        }
        yield System(
            bus=bus,
            nats_url=server.url,
            creds=creds,
            floor_socket=floor_socket,
            pids=pids,
            state_dir=root / "state",
            cdi_dir=root / "cdi",
        )
    finally:
        for name in ("kubelet_shim", "claim_preparation", "floor"):
            if name in children:
                await children[name].stop()
        await bus.close()
        await server.stop()


@contextlib.asynccontextmanager
async def up_system(
    root: Path, machine: str = PROFILE, mig_mode: str = "static", settings: Mapping[str, str] | None = None
) -> AsyncIterator[System]:
    """``gpudra up`` as a user starts it (the supervisor, nats-server, every service) on the bench's machine:
    what it costs with everything else that reacts to a claim running too. ``settings``: more ``GPUDRA_*``."""
    profile = root / "profile.yaml"
    profile.write_text(machine)
    env = {**os.environ, "GPUDRA_MIG_MODE": mig_mode, "GPUDRA_LOG_LEVEL": "INFO", **(settings or {})}  # tracing on
    argv = [sys.executable, "-m", "cli", "up", "--state-dir", str(root), "--node", NODE, "--profile", str(profile)]
    up = await Child.start("gpudra up", argv, env, "Ctrl-C stops everything")
    floor: Child | None = None
    bus: Bus | None = None
    try:
        running = endpoints.read(root)
        users = root / "trust" / "users"
        creds = str(Authority.open(root / "trust").write(users / "bench.creds", "bench", EVERYTHING))
        bus = await Bus.connect(CommonSettings(nats_url=running.nats_url, node_name=NODE, nats_creds=creds), "bench")
        floor_socket = str(root / "floor.sock")
        floor = await Child.start("floor", floor_args(floor_socket, running.nats_url, creds), env, "floor ready")
        pids = {**running.services, "supervisor": up.pid}
        yield System(
            bus=bus,
            nats_url=running.nats_url,
            creds=creds,
            floor_socket=floor_socket,
            pids=pids,
            state_dir=Path(running.state_dir),
            cdi_dir=Path(running.cdi_dir),
        )
    finally:
        if floor is not None:
            await floor.stop()
        if bus is not None:
            await bus.close()
        await up.stop()


def floor_args(socket: str, nats_url: str, creds: str) -> list[str]:
    """The floor's far end: a bare gRPC server and a bare NATS responder, in a process of its own."""
    code = "import asyncio, sys; from bench.prepare import serve_floor; asyncio.run(serve_floor(*sys.argv[1:]))"
    return [sys.executable, "-c", code, socket, nats_url, creds]


async def store(kube: LocalKube, name: str, *names: str) -> tuple[str, str, str]:
    """An allocated claim of these devices in the standalone store, as (namespace, name, uid) for the kubelet."""
    devices = [("mig" if "-mig-" in device else "gpu", device) for device in names]
    created = await kube.create(RESOURCE_CLAIMS, claim_object(name, "default", devices, None, DRIVER))
    created["status"] = {"allocation": allocation(whole_devices(devices, node=NODE, driver=DRIVER), None, NODE, DRIVER)}
    await kube.update_status(RESOURCE_CLAIMS, created)
    return ("default", name, str(created["metadata"]["uid"]))


async def run(rounds: int, calls: int, bursts: int, cprofile: Path | None, whole: bool) -> Results:
    results = Results()
    with tempfile.TemporaryDirectory(prefix="gpudra-bench-", dir="/tmp") as tmp:  # short: unix socket paths
        root = Path(tmp)
        async with up_system(root) if whole else system(root, cprofile) as running:
            bus = running.bus
            kube = await LocalKube.open(bus.js)
            one = await store(kube, "latency-0", LATENCY_GPU)
            many = [await store(kube, f"burst-{i}", device) for i, device in enumerate(MIG_DEVICES)]
            registration = root / "kubelet" / "plugins_registry" / f"{DRIVER}-reg.sock"
            client = await KubeletClient.register(registration, driver_name=DRIVER)
            raw = await nats.connect(running.nats_url, user_credentials=running.creds)
            channel = grpc.aio.insecure_channel(f"unix://{running.floor_socket}")
            phases = PhaseLog()
            subscription = await bus.nc.subscribe(f"gpudra.v1.{NODE}.claims.prepared", cb=phases.on_message)
            floor_dir = root / "floor"
            floor_dir.mkdir()
            try:
                await measure(
                    results,
                    bus=bus,
                    client=client,
                    one=one,
                    raw=raw,
                    channel=channel,
                    floor_dir=floor_dir,
                    running=running,
                    phases=phases,
                    rounds=rounds,
                    calls=calls,
                )
                await throughput(results, client, many, running.pids, bursts)
                results.phases = phases.phases
                results.memory = {n: memory_mb(running.pids[n]) for n in ("kubelet_shim", "claim_preparation")}
            finally:
                await subscription.unsubscribe()
                await channel.close()
                await raw.close()
                await client.close()
    if cprofile is not None:
        print_profiles(cprofile)
    return results


async def measure(
    results: Results,
    *,
    bus: Bus,
    client: KubeletClient,
    one: tuple[str, str, str],
    raw: Client,
    channel: grpc.aio.Channel,
    floor_dir: Path,
    running: System,
    phases: PhaseLog,
    rounds: int,
    calls: int,
) -> None:
    """Alternating rounds: the four floor parts, then ``calls`` prepare/unprepare cycles of the one-GPU claim."""
    empty: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(FLOOR_METHOD)

    async def prepare() -> None:
        result = (await client.prepare([one]))[one[2]]
        if result.error:
            raise RuntimeError(result.error)

    async def unprepare() -> None:
        result = (await client.unprepare([one]))[one[2]]
        if result.error:
            raise RuntimeError(result.error)

    ref = ClaimRef(namespace=one[0], name=one[1], uid=one[2])

    async def direct_prepare() -> None:
        reply = await bus.request(NODE, PrepareClaims(claims=[ref]), PrepareClaimsReply, timeout=10)
        if reply.results[ref.uid].error:
            raise RuntimeError(reply.results[ref.uid].error)

    async def direct_unprepare() -> None:
        reply = await bus.request(NODE, UnprepareClaims(claims=[ref]), UnprepareClaimsReply, timeout=10)
        if reply.results[ref.uid].error:
            raise RuntimeError(reply.results[ref.uid].error)

    js = raw.jetstream()

    # Warm-up, and the sizes of the claim's real checkpoint record and CDI spec.
    for _ in range(20):
        await prepare()
        await unprepare()
        await empty(b"")
        await raw.request(FLOOR_SUBJECT, b"", timeout=5)
    await prepare()
    state = running.state_dir / "claim_preparation" / "claims" / f"{one[2]}.json"
    spec = running.cdi_dir / f"k8s.{DRIVER}-claim_{one[2]}.json"
    pids = running.pids
    checkpoint_bytes, cdi_bytes = state.read_bytes(), spec.read_bytes()
    results.sizes = {"checkpoint": len(checkpoint_bytes), "cdi": len(cdi_bytes)}
    await unprepare()
    cpu = dict.fromkeys([*pids, "kubelet (this process)"], 0.0)
    for _ in range(rounds):
        results.floor["grpc"] += await timed(lambda: empty(b""), calls)
        results.floor["nats"] += await timed(lambda: raw.request(FLOOR_SUBJECT, b"", timeout=5), calls)
        for part, name, data in (("checkpoint", "record.json", checkpoint_bytes), ("cdi", "spec.json", cdi_bytes)):
            results.floor[part] += timed_sync(functools.partial(atomic_write, floor_dir, name, data), calls)
            lean = functools.partial(atomic_write, floor_dir, name, data, durable=False)
            results.floor[f"{part}-lean"] += timed_sync(lean, calls)
        before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        mine = time.process_time()
        phases.recording = True
        for _ in range(calls):
            results.prepare += await timed(prepare, 1)
            results.unprepare += await timed(unprepare, 1)
        phases.recording = False
        cpu["kubelet (this process)"] += time.process_time() - mine
        for name, pid in pids.items():
            cpu[name] += cpu_seconds(pid) - before[name]
        for _ in range(calls):
            results.diagnostics["direct prepare"] += await timed(direct_prepare, 1)
            results.diagnostics["direct unprepare"] += await timed(direct_unprepare, 1)
        results.diagnostics["publish"] += await timed(lambda: js.publish(DIAGNOSTIC_SUBJECT, b"{}"), calls)
    results.cycles = rounds * calls
    results.cpu_latency = {name: seconds * 1000 / results.cycles for name, seconds in cpu.items()}


async def throughput(
    results: Results, client: KubeletClient, many: Sequence[tuple[str, str, str]], pids: dict[str, int], bursts: int
) -> None:
    """``bursts`` times: 16 callers prepare their own claims at once, then all 16 unprepare at once."""

    async def one(claim: tuple[str, str, str], operation: str) -> None:
        began = time.perf_counter()
        if operation == "prepare":
            error = (await client.prepare([claim]))[claim[2]].error
        else:
            error = (await client.unprepare([claim]))[claim[2]].error
        if error:
            raise RuntimeError(error)
        if operation == "prepare":
            results.burst_calls.append((time.perf_counter() - began) * 1000)

    async def burst(operation: str) -> float:
        began = time.perf_counter()
        await asyncio.gather(*(one(claim, operation) for claim in many))
        return time.perf_counter() - began

    await burst("prepare")  # warm-up
    await burst("unprepare")
    results.burst_calls.clear()
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    mine = time.process_time()
    for _ in range(bursts):
        results.burst_prepare_s.append(await burst("prepare"))
        results.burst_unprepare_s.append(await burst("unprepare"))
    cycles = bursts * len(many)
    results.cpu_burst = {name: (cpu_seconds(pid) - before[name]) * 1000 / cycles for name, pid in pids.items()}
    results.cpu_burst["kubelet (this process)"] = (time.process_time() - mine) * 1000 / cycles
    results.bursts = bursts


PROFILE_GROUPS = (
    ("site-packages/nats", "nats-py"),
    ("site-packages/grpc", "grpc"),
    ("site-packages/opentelemetry", "opentelemetry"),
    ("site-packages/prometheus_client", "prometheus_client"),
    ("/asyncio/", "asyncio"),
    ("selectors.py", "asyncio"),
    ("/logging/", "logging"),
    ("/email/", "header parsing (email.parser)"),
    ("threading.py", "to_thread hand-offs"),
    ("concurrent/futures", "to_thread hand-offs"),
    ("importlib", "imports (start-up)"),
    ("libs/telemetry", "gpudra libs/telemetry"),
    ("libs/bus", "gpudra libs/bus"),
    ("libs/kube", "gpudra libs/kube"),
    ("libs/devices", "gpudra libs/devices"),
    ("libs/cdi", "gpudra libs/cdi"),
    ("services/", "gpudra services"),
)
BUILTIN_GROUPS = {
    "<method 'poll' of 'select.epoll' objects>": "idle (epoll)",
    "<method 'send' of '_socket.socket' objects>": "socket send/recv",
    "<method 'recv' of '_socket.socket' objects>": "socket send/recv",
    "<method 'run' of '_contextvars.Context' objects>": "asyncio",
    "<method 'set_result' of '_asyncio.Future' objects>": "asyncio",
    "<method 'write' of '_io.TextIOWrapper' objects>": "logging",
    "<method 'put' of '_queue.SimpleQueue' objects>": "to_thread hand-offs",
    "<built-in method builtins.compile>": "imports (start-up)",
    "<built-in method marshal.loads>": "imports (start-up)",
}


def profile_group(file: str, function: str) -> str:
    """Where a profiled function belongs, to see which layer the CPU time goes to."""
    if function in BUILTIN_GROUPS:
        return BUILTIN_GROUPS[function]
    return next((group for marker, group in PROFILE_GROUPS if marker in file), "other")


def print_profiles(directory: Path) -> None:
    """Own time of each service's main thread by layer, then its busiest functions (idle time left out).

    cProfile sees the main thread only: the blocking file work done in ``asyncio.to_thread`` is not in it.
    """
    for path in sorted(directory.glob("*.prof")):
        stats = pstats.Stats(str(path))
        layers: dict[str, float] = {}
        for (file, _, function), (_, _, own, _, _) in stats.stats.items():  # type: ignore[attr-defined]
            group = profile_group(file, function)
            layers[group] = layers.get(group, 0.0) + own
        busy = sum(seconds for group, seconds in layers.items() if group != "idle (epoll)")
        print(
            f"\n-- cProfile of {path.stem}: main thread busy {busy:.2f} s (idle {layers.get('idle (epoll)', 0):.2f} s)"
        )
        for group, seconds in sorted(layers.items(), key=lambda item: -item[1]):
            if group != "idle (epoll)":
                print(f"  {seconds:7.3f} s  {100 * seconds / busy:5.1f} %  {group}")
        stats.strip_dirs().sort_stats("tottime").print_stats(r"^(?!.*poll)", 15)


def report(results: Results, command: str) -> None:
    med = statistics.median
    floor = {part: med(samples) for part, samples in results.floor.items()}
    total, lean = sum(floor[p] for p in FLOOR), sum(floor[p] for p in LEAN_FLOOR)
    p50, p99 = pct(results.prepare, 0.5), pct(results.prepare, 0.99)
    u50, u99 = pct(results.unprepare, 0.5), pct(results.unprepare, 0.99)
    rate = CALLERS * results.bursts / sum(results.burst_prepare_s)
    unrate = CALLERS * results.bursts / sum(results.burst_unprepare_s)
    print(f"$ {command}")
    print(f"sizes: checkpoint record {results.sizes['checkpoint']} B, CDI spec {results.sizes['cdi']} B")
    print(f"floor (p50 of each part, ms; {len(results.floor['grpc'])} samples each)")
    for part, label in FLOOR_PARTS.items():
        print(f"  {label:<46} {floor[part]:7.3f}   p99 {pct(results.floor[part], 0.99):7.3f}")
    print(f"  {'floor = gRPC + NATS + two fsync writes':<46} {total:7.3f}")
    print(f"  {'lean floor = gRPC + NATS + two writes':<46} {lean:7.3f}")
    print(f"one-GPU claim through the shim ({results.cycles} cycles; ms)")
    print(
        f"  prepare    p50 {p50:7.3f}   p99 {p99:7.3f}   p50/floor {p50 / total:5.2f}  (goal <= {GOAL_RATIO:g})"
        f"   p50/lean floor {p50 / lean:5.2f}"
    )
    print(
        f"  unprepare  p50 {u50:7.3f}   p99 {u99:7.3f}   p50/floor {u50 / total:5.2f}"
        f"   p50/lean floor {u50 / lean:5.2f}"
    )
    print("  CPU ms per prepare+unprepare cycle: " + _cpu(results.cpu_latency))
    system_cpu = sum(ms for name, ms in results.cpu_latency.items() if name not in NOT_THE_SYSTEM)
    print(f"  CPU ms per cycle, gpudra and nats-server: {system_cpu:.2f}   (goal <= {GOAL_CPU_MS:g})")
    print("  where the time goes (p50, ms; not part of the floor):")
    for part, label in DIAGNOSTICS.items():
        print(f"    {label:<46} {pct(results.diagnostics[part], 0.5):7.3f}")
    print("  claim_preparation phases of prepare (ClaimPrepared timings_ms, p50):")
    print("    " + "  ".join(f"{phase} {med(ms):.3f}" for phase, ms in sorted(results.phases.items())))
    print(f"throughput: {CALLERS} callers, one MIG-device claim each, two per GPU ({results.bursts} bursts)")
    print(
        f"  prepares/s    {rate:7.0f}   (goal >= {GOAL_RATE:g})   per call p50 {pct(results.burst_calls, 0.5):.1f} ms"
    )
    print(f"  unprepares/s  {unrate:7.0f}")
    print("  CPU ms per prepare+unprepare cycle: " + _cpu(results.cpu_burst))
    print("memory after the run (MB)")
    for name, values in results.memory.items():
        print(f"  {name:<18} VmRSS {values['VmRSS']:6.1f}   VmHWM {values['VmHWM']:6.1f}   (goal < {GOAL_RSS_MB:g})")
    goals = {
        "p50 within 2x the floor": p50 / total <= GOAL_RATIO,
        f"<= {GOAL_CPU_MS:g} CPU-ms per cycle": system_cpu <= GOAL_CPU_MS,
        f">= {GOAL_RATE:g} prepares/s": rate >= GOAL_RATE,
        f"each service < {GOAL_RSS_MB:g} MB RSS": all(v["VmRSS"] < GOAL_RSS_MB for v in results.memory.values()),
    }
    print("goals: " + "; ".join(f"{goal}: {'met' if ok else 'MISSED'}" for goal, ok in goals.items()))


def _cpu(cpu: dict[str, float]) -> str:
    return ", ".join(f"{name} {ms:.2f}" for name, ms in cpu.items()) + f" (sum {sum(cpu.values()):.2f})"


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench prepare", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rounds",
        type=int,
        default=30,
        help="alternating floor/latency rounds (short rounds spread a shared machine's noise over both sides)",
    )
    parser.add_argument("--calls", type=int, default=30, help="calls of each kind per round")
    parser.add_argument("--bursts", type=int, default=60, help=f"bursts of {CALLERS} concurrent prepares")
    parser.add_argument("--cprofile", type=Path, help="run both services under cProfile, write .prof files here")
    parser.add_argument(
        "--system",
        choices=("trimmed", "up"),
        default="trimmed",
        help="trimmed: claim_preparation and the shim alone (isolates them); up: the whole system gpudra up starts",
    )
    args = parser.parse_args(argv)
    if args.cprofile is not None and args.system == "up":
        parser.error("--cprofile runs the trimmed system's two services under cProfile; not with --system up")
    if args.cprofile is not None:
        args.cprofile.mkdir(parents=True, exist_ok=True)
    results = asyncio.run(run(args.rounds, args.calls, args.bursts, args.cprofile, args.system == "up"))
    report(results, " ".join(["python -m bench prepare", *argv]))
