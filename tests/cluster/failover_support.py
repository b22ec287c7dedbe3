"""Failover on a three-server NATS cluster: what ``test_cluster_failover.py`` and ``python -m bench failover`` share.

The system runs in this process, each part on its own connection naming all three servers (so nats-py fails
over): claim_preparation on a simulated ``mixed-mig`` node (the standalone Kubernetes store, in KV), the
remediation controller (its Kubernetes store in KV too), a "kubelet" asking for prepares and unprepares, node
monitors publishing health events, and three watchers (durable consumers, as an extender would run them) of the
claim events, of the controller's verdicts and of its dead letters. Every stream and bucket has three replicas.

One round (``Round.run``):

1. the victim is the server claim_preparation is connected to; the leaders of ``GPUDRA_CLAIMS`` and
   ``GPUDRA_HEALTH`` are moved onto it (a leader step-down naming it), and so is the leader of the controller's
   durable ``health-remediation`` when ``kill_consumer_leader`` (else it is moved off it): one SIGKILL takes
   them all and claim_preparation's connection;
2. four kubelet loops, one claim each (a whole GPU each, so they never wait for each other), prepare and
   unprepare their claim in turn, asking again after an error or a timeout as the kubelet does; the monitors of
   the round's nodes publish the first half of a fault burst (informational XIDs, each a condition of its own, so
   each gets exactly one verdict and nothing else happens);
3. once every loop has done a few cycles and the first half is stored, the victim gets SIGKILL and the second
   half of the burst is published into the outage, each event asked again with the same id (as the monitors do)
   until JetStream stores it;
4. the round goes on until the whole burst is stored and a claim event published after the kill has reached the
   watcher; then each loop does a few more cycles and stops;
5. the victim is started again on its old port and store; once its replicas are current the leaders are moved
   back onto it, so the streams read afterwards are the restarted server's copies;
6. the audit (``Audit``): per claim, counted by ``ce-id`` in stream order, one ``ClaimPrepared`` then one
   ``ClaimUnprepared`` per cycle, each delivered to the watcher; per health event, exactly one verdict (by its
   ``source_event_ids``) or a dead letter; no ``ce-id`` stored twice (the two-minute de-duplication window
   covers every retry here).

What the services went through is counted from their log records (``LogTally``): the claim outbox's refused
publishes (each retried with the same id), the controller's failed actions and book writes, replies the server
refused. ``RoundResult`` holds the figures; the bench adds the seconds until each stream has a new leader
(``LeaderWatch``, polling a surviving server).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import math
import statistics
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import msgspec
from nats.aio.client import Client
from nats.js import JetStreamContext, api
from prometheus_client import REGISTRY

from libs.bus import Bus, CommandError, ConsumerSpec
from libs.bus.topology import (
    DEADLETTER_STREAM,
    HEALTH_REMEDIATION,
    INVENTORY_BUCKET,
    KUBE_BUCKET,
    LEASE_BUCKET,
    REMEDIATION_BUCKET,
    BusLimits,
    event_stream,
    kv_stream,
)
from libs.devices.simulated import load_profile
from libs.devices.simulated.ops import initial_state, inventory_of
from libs.events import Domain, Envelope, Event, node_token
from libs.events.catalogue import (
    ClaimPrepared,
    ClaimRef,
    ClaimUnprepared,
    PrepareClaims,
    PrepareClaimsReply,
    UnprepareClaims,
    UnprepareClaimsReply,
)
from libs.events.catalogue.health import EntityRef, FaultClassified, HealthEvent
from libs.events.envelope import new_event_id
from libs.kube import LocalKube
from libs.natsserver import EmbeddedNats
from libs.settings import CommonSettings
from libs.trust.authority import Authority
from libs.trust.permissions import EVERYTHING
from libs.trust.roles import SERVICE_ROLES, Role
from services.claim_preparation.service import ClaimService, running
from services.claim_preparation.settings import Settings as ClaimSettings
from services.health.controller import Controller, running_controller
from services.health.controller.config import from_settings
from services.health.settings import Settings as HealthSettings
from tests.claim_preparation.claim_prep_support import NODE, node_fields, store_claim

CLAIMS_STREAM = event_stream(Domain.CLAIMS)
HEALTH_STREAM = event_stream(Domain.HEALTH)
HEALTH_DURABLE = HEALTH_REMEDIATION.name
CLAIM_GPUS = ("gpu-4", "gpu-5", "gpu-6", "gpu-7")
"""The whole GPUs of the ``mixed-mig`` profile: a kubelet loop each, so no claim waits for another."""
INFORMATIONAL_XIDS = ("14", "37", "38", "43", "44", "63", "66", "67", "92", "93", "121", "137")
"""XIDs the default catalogue calls informational: a verdict each (action NONE), no remediation, no escalation."""
VERDICTS = "gpudra.v1.*.health.verdicts"
CLAIM_EVENTS = f"gpudra.v1.{node_token(NODE)}.claims.>"
HEALTH_DEADLETTERS = f"gpudra.deadletter.{HEALTH_STREAM}.{HEALTH_DURABLE}"
WAIT = 30.0
"""The longest wait for one expected thing; a failover takes 4-9 s (nats-server's election timeout)."""
HEALTH_ACK_WAIT = 60.0
"""The controller's durable redelivers an event this long after a delivery nobody settled (``health_spec``): a
nak lost with the consumer's leader costs its event this long."""


# --- credentials ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Issuer:
    """Mints credentials for the cluster's clients from the cluster's authority, as ``gpudra up`` would."""

    authority: Authority
    users: Path
    urls: str
    """Every server's URL, comma-separated: clients fail over between them."""

    def harness(self, node: str = NODE, name: str = "harness") -> CommonSettings:
        """A client that may do anything (the kubelet, the API server, the node monitors, the watchers)."""
        path = self.authority.write(self.users / f"{name}.creds", name, EVERYTHING)
        return CommonSettings(nats_url=self.urls, node_name=node, nats_creds=str(path))

    def creds(self, principal: str, roles: Iterable[Role], node: str) -> str:
        held = sorted(roles)
        path = self.users / f"{principal}@{node}+{'+'.join(held)}.creds"
        return str(self.authority.issue(path, principal, held, node))


def claim_settings(issuer: Issuer, root: Path) -> ClaimSettings:
    """claim_preparation on the simulated node with its own credentials (as ``claim_prep_support`` sets it up)."""
    root.mkdir(parents=True, exist_ok=True)
    connection = {
        "nats_url": issuer.urls,
        "node_name": NODE,
        "nats_creds": issuer.creds("claim_preparation", SERVICE_ROLES["claim_preparation"], NODE),
    }
    return msgspec.convert({**connection, **node_fields(root)}, ClaimSettings)


def controller_settings(issuer: Issuer) -> HealthSettings:
    return msgspec.convert(
        {
            "nats_url": issuer.urls,
            "nats_creds": issuer.creds("health", [Role.HEALTH_CONTROLLER], "controller-0"),
            "node_name": "controller-0",
            "role": "controller",
            "kube_mode": "local",
            "metrics_port": -1,
            "lease_renew_seconds": 0.5,
            "sweep_seconds": 1.0,
            "controller_id": "failover",
            "breaker_max_share": 1.0,
            "breaker_max_nodes": 100_000,
        },
        HealthSettings,
    )


# --- the cluster's leaders -----------------------------------------------------------------------------------


Asset = tuple[str, str]
"""A replicated thing with a leader of its own: (stream, "") or (stream, durable consumer)."""
STREAMS: tuple[Asset, ...] = ((CLAIMS_STREAM, ""), (HEALTH_STREAM, ""))
CONSUMER: Asset = (HEALTH_STREAM, HEALTH_DURABLE)
BUCKETS: tuple[Asset, ...] = tuple(
    (kv_stream(bucket), "") for bucket in (KUBE_BUCKET, REMEDIATION_BUCKET, LEASE_BUCKET, INVENTORY_BUCKET)
)
"""The buckets the round's work uses: the claims' store, the controller's books and leases, the inventories."""


def asset_name(asset: Asset) -> str:
    return f"{asset[0]}/{asset[1]}" if asset[1] else asset[0]


async def cluster_info(nc: Client, asset: Asset, timeout: float = 1.0) -> dict[str, Any]:
    """The asset's ``cluster`` block as the JetStream API answers it; empty when nobody answers in time (no
    leader). A raw request with a short timeout: nats-py's ``stream_info`` waits its context's whole timeout
    (5 s) when there is no leader, which would hide how soon the new one is there."""
    stream, consumer = asset
    subject = f"$JS.API.CONSUMER.INFO.{stream}.{consumer}" if consumer else f"$JS.API.STREAM.INFO.{stream}"
    try:
        reply = await nc.request(subject, b"", timeout=timeout)
    except Exception:
        return {}
    body: dict[str, Any] = json.loads(reply.data)
    cluster: dict[str, Any] = body.get("cluster") or {}
    return {} if "error" in body else cluster


async def leader_of(nc: Client, asset: Asset) -> str:
    return str((await cluster_info(nc, asset)).get("leader") or "")


async def move_leader(nc: Client, asset: Asset, server: str, timeout: float = WAIT) -> None:
    """Make ``server`` the asset's leader: a step-down naming it as preferred (nats-server 2.11+), until it is."""
    stream, consumer = asset
    subject = (
        f"$JS.API.CONSUMER.LEADER.STEPDOWN.{stream}.{consumer}"
        if consumer
        else f"$JS.API.STREAM.LEADER.STEPDOWN.{stream}"
    )
    body = json.dumps({"placement": {"preferred": server}}).encode()
    async with asyncio.timeout(timeout):
        while (leader := await leader_of(nc, asset)) != server:
            if leader:  # none: an election is under way; ask once it is over
                with contextlib.suppress(Exception):
                    await nc.request(subject, body, timeout=2)
            await asyncio.sleep(0.1)  # a leader change has nothing to await


async def caught_up(nc: Client, asset: Asset, server: str, timeout: float = WAIT) -> None:
    """Until ``server``'s replica of the asset is current (no lag), as the leader sees it."""
    async with asyncio.timeout(timeout):
        while True:
            cluster = await cluster_info(nc, asset)
            peer = {p["name"]: p for p in cluster.get("replicas") or ()}.get(server)
            if cluster.get("leader") == server or (peer is not None and peer.get("current") and not peer.get("lag")):
                return
            await asyncio.sleep(0.1)  # replication has nothing to await


class LeaderWatch:
    """Asks a surviving server every 50 ms who leads each asset: seconds from the kill until each has a leader
    that is not the victim."""

    def __init__(self, nc: Client, assets: Sequence[Asset], victim: str) -> None:
        self._nc = nc
        self._assets = list(assets)
        self._victim = victim
        self.seconds: dict[str, float] = {}
        self.new_leaders: dict[str, str] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self, killed_at: float) -> None:
        self._task = asyncio.create_task(self._poll(killed_at))

    async def _poll(self, killed_at: float) -> None:
        async def one(asset: Asset) -> None:
            while True:
                leader = str((await cluster_info(self._nc, asset, timeout=0.25)).get("leader") or "")
                if leader and leader != self._victim:
                    self.seconds[asset_name(asset)] = time.monotonic() - killed_at
                    self.new_leaders[asset_name(asset)] = leader
                    return
                await asyncio.sleep(0.05)

        await asyncio.gather(*(one(asset) for asset in self._assets))

    async def wait(self, timeout: float = WAIT) -> None:
        if self._task is not None:
            await asyncio.wait_for(self._task, timeout)


# --- what the services logged --------------------------------------------------------------------------------


class LogTally(logging.Handler):
    """Counts the warnings and errors of gpudra's own loggers, by logger and message template."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.counts: Counter[tuple[str, str]] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith(("services.", "libs.")):
            self.counts[(record.name, str(record.msg))] += 1

    @contextlib.contextmanager
    def installed(self) -> Iterator[LogTally]:
        """On the root logger, with gpudra's loggers letting warnings through while it is."""
        root = logging.getLogger()
        ours = [logging.getLogger(name) for name in ("services", "libs")]
        levels = [logger.level for logger in ours]
        for logger in ours:
            if logger.getEffectiveLevel() > logging.WARNING:
                logger.setLevel(logging.WARNING)
        root.addHandler(self)
        try:
            yield self
        finally:
            root.removeHandler(self)
            for logger, level in zip(ours, levels, strict=True):
                logger.setLevel(level)


def counted(counts: Counter[tuple[str, str]], logger: str, template_start: str) -> int:
    return sum(n for (name, msg), n in counts.items() if name == logger and msg.startswith(template_start))


def service_errors(counts: Counter[tuple[str, str]]) -> dict[str, int]:
    """What the services logged about the bus refusing them: publishes and book writes (each tried again later
    with the same id) and replies the server refused (a request taken in before a reconnect)."""
    return {
        "claim events refused": counted(counts, "services.claim_preparation.outbox", "could not publish"),
        "controller events refused": counted(counts, "services.health.controller.executor", "%s actions failed"),
        "controller book writes failed": counted(counts, "services.health.controller.controller", "could not save"),
        "replies refused": counted(counts, "libs.bus.connection", "NATS refused"),
    }


def duplicates_dropped() -> float:
    """Publishes JetStream answered as duplicates in this process (a retry whose first try had been stored)."""
    return sum(
        sample.value
        for metric in REGISTRY.collect()
        if metric.name == "gpudra_bus_publish_duplicates"
        for sample in metric.samples
        if sample.name.endswith("_total")
    )


# --- the system ----------------------------------------------------------------------------------------------


class Progress:
    """Wakes whoever waits for a condition on what another task counts."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        event, self._event = self._event, asyncio.Event()
        event.set()

    async def until(self, check: Callable[[], bool], timeout: float = WAIT, what: str = "") -> None:
        try:
            async with asyncio.timeout(timeout):
                while not check():
                    await self._event.wait()
        except TimeoutError:
            raise AssertionError(f"not within {timeout:g}s: {what or check}") from None


class Watcher:
    """A durable consumer (an extender's) recording what it is handed: deliveries per ``ce-id``, the event, when
    it first came (monotonic) and when it was sent (``ce-time``)."""

    def __init__(self, durable: str, stream: str, subjects: list[str]) -> None:
        self.spec = ConsumerSpec(stream=stream, durable=durable, filter_subjects=subjects, ack_wait=10.0)
        self.deliveries: Counter[str] = Counter()
        self.events: dict[str, Event] = {}
        self.arrived: dict[str, float] = {}
        self.sent: dict[str, dt.datetime] = {}
        self.progress = Progress()

    async def handle(self, envelope: Envelope[Event]) -> None:
        self.deliveries[envelope.id] += 1
        self.events[envelope.id] = envelope.data
        self.arrived.setdefault(envelope.id, time.monotonic())
        self.sent[envelope.id] = envelope.time
        self.progress.notify()


@dataclass
class System:
    """Everything that runs across rounds."""

    servers: list[EmbeddedNats]
    issuer: Issuer
    admin: Bus
    kubelet: Bus
    kube: LocalKube
    claim_bus: Bus
    claims: ClaimService
    controller: Controller
    claim_watch: Watcher
    verdict_watch: Watcher
    deadletter_watch: Watcher
    tally: LogTally

    def connected_to(self, bus: Bus) -> EmbeddedNats:
        url = bus.nc.connected_url
        assert url is not None, "not connected"
        return next(s for s in self.servers if s.port == url.port)


@asynccontextmanager
async def running_system(servers: list[EmbeddedNats], issuer: Issuer, root: Path) -> AsyncIterator[System]:
    """Bootstraps the cluster (three replicas), then starts the services and the watchers on it."""
    async with AsyncExitStack() as stack:
        tally = stack.enter_context(LogTally().installed())
        admin = await _bus(stack, issuer.harness(), "admin")
        await admin.bootstrap(BusLimits(stream_replicas=3))
        kubelet = await _bus(stack, issuer.harness(), "kubelet")
        settings = claim_settings(issuer, root / "claims")
        claim_bus = await _bus(stack, settings, "claim_preparation")
        claims = await stack.enter_async_context(running(claim_bus, settings))
        await claim_bus.serve("0.0.0-test", claims.endpoints)
        await claim_bus.nc.flush()
        health = controller_settings(issuer)
        controller_bus = await _bus(stack, health, "health")
        controller = await stack.enter_async_context(running_controller(controller_bus, health, from_settings(health)))
        watchers = (
            Watcher("failover-claims", CLAIMS_STREAM, [CLAIM_EVENTS]),
            Watcher("failover-verdicts", HEALTH_STREAM, [VERDICTS]),
            Watcher("failover-deadletters", DEADLETTER_STREAM, [HEALTH_DEADLETTERS]),
        )
        watch_bus = await _bus(stack, issuer.harness(), "watcher")
        for watcher in watchers:
            await watch_bus.consume(watcher.spec, watcher.handle)
        await _until_answering(kubelet)
        yield System(
            servers=servers,
            issuer=issuer,
            admin=admin,
            kubelet=kubelet,
            kube=await LocalKube.open(admin.js),
            claim_bus=claim_bus,
            claims=claims,
            controller=controller,
            claim_watch=watchers[0],
            verdict_watch=watchers[1],
            deadletter_watch=watchers[2],
            tally=tally,
        )


async def _bus(stack: AsyncExitStack, settings: CommonSettings, service: str) -> Bus:
    bus = await Bus.connect(settings, service)
    stack.push_async_callback(bus.close)
    return bus


async def _until_answering(bus: Bus) -> None:
    """Right after a subscription nats-server now and then still answers "no responders" (claim_prep_support)."""
    async with asyncio.timeout(WAIT):
        while True:
            try:
                await bus.request(NODE, UnprepareClaims(claims=[]), UnprepareClaimsReply, timeout=5)
                return
            except CommandError:
                await asyncio.sleep(0.05)


# --- the kubelet ---------------------------------------------------------------------------------------------


Operation = Literal["prepare", "unprepare"]
Window = Literal["before", "during", "after"]


@dataclass
class Call:
    """One kubelet call, asked until answered: when it began, how long until answered, the errors before."""

    operation: Operation
    uid: str
    started: float
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)


class ClaimLoad:
    """Kubelet loops, one per claim, each preparing and unpreparing its claim in turn."""

    def __init__(self, bus: Bus, claims: Sequence[ClaimRef], timeout: float) -> None:
        self._bus = bus
        self.claims = list(claims)
        self._timeout = timeout
        self.calls: list[Call] = []
        self.done = [0 for _ in claims]
        """Cycles (prepared, then unprepared) completed, per loop."""
        self.progress = Progress()
        self._targets: list[int | None] = [None for _ in claims]

    def cycles(self) -> int:
        return min(self.done)

    def cycles_of(self) -> dict[str, int]:
        return {ref.uid: done for ref, done in zip(self.claims, self.done, strict=True)}

    def finish(self, more: int) -> None:
        """Each loop stops after ``more`` further cycles."""
        self._targets = [done + more for done in self.done]

    async def run(self) -> None:
        await asyncio.gather(*(self._loop(index) for index in range(len(self.claims))))

    async def _loop(self, index: int) -> None:
        ref = self.claims[index]
        while (target := self._targets[index]) is None or self.done[index] < target:
            await self._call("prepare", ref)
            await self._call("unprepare", ref)
            self.done[index] += 1
            self.progress.notify()

    async def _call(self, operation: Operation, ref: ClaimRef) -> None:
        call = Call(operation, ref.uid, time.monotonic())
        self.calls.append(call)
        while error := await self._once(operation, ref):
            call.errors.append(error)
            await asyncio.sleep(0.1)  # the kubelet's pause before it asks again
        call.seconds = time.monotonic() - call.started

    async def _once(self, operation: Operation, ref: ClaimRef) -> str:
        try:
            if operation == "prepare":
                command: PrepareClaims | UnprepareClaims = PrepareClaims(claims=[ref])
                prepared = await self._bus.request(NODE, command, PrepareClaimsReply, timeout=self._timeout)
                return prepared.results[ref.uid].error
            command = UnprepareClaims(claims=[ref])
            unprepared = await self._bus.request(NODE, command, UnprepareClaimsReply, timeout=self._timeout)
            return unprepared.results[ref.uid].error
        except CommandError as exc:
            return str(exc)


# --- the node monitors ---------------------------------------------------------------------------------------


@dataclass
class Published:
    node: str
    event_id: str
    event: HealthEvent
    stored: bool = False


class FaultBurst:
    """Each node's monitors publish one fault per (GPU, informational XID), asking again with the same id until
    JetStream stores it; the second half of each node's waits for ``release``."""

    def __init__(self, nodes: dict[str, Bus], events_per_node: int) -> None:
        self._buses = nodes
        self.events: list[Published] = []
        for node in nodes:
            gpus = inventory_of(initial_state(node, load_profile("dgx-h100"))).gpus
            for gpu, xid in [(gpu, xid) for xid in INFORMATIONAL_XIDS for gpu in gpus][:events_per_node]:
                event = HealthEvent(
                    node=node,
                    check="xid",
                    component="gpu",
                    entity=EntityRef(kind="gpu", id=gpu.uuid, device=gpu.name),
                    error_codes=[xid],
                    message=f"XID {xid} (failover)",
                    detected_at=dt.datetime.now(dt.UTC),
                )
                self.events.append(Published(node=node, event_id=new_event_id(), event=event))
        self.first_half = sum(len(self._of(node)) // 2 for node in nodes)
        self.release = asyncio.Event()
        self.progress = Progress()
        self.errors: list[str] = []

    def _of(self, node: str) -> list[Published]:
        return [p for p in self.events if p.node == node]

    def stored(self) -> int:
        return sum(p.stored for p in self.events)

    async def run(self) -> None:
        await asyncio.gather(*(self._node(node) for node in self._buses))

    async def _node(self, node: str) -> None:
        mine = self._of(node)
        for index, published in enumerate(mine):
            if index == len(mine) // 2:
                await self.release.wait()
            while True:
                try:
                    await self._buses[node].publish(published.event, event_id=published.event_id)
                    break
                except Exception as exc:
                    self.errors.append(f"{type(exc).__name__}: {exc}")
                    await asyncio.sleep(0.2)  # the monitors' pause before they try again (reporter.RETRY_DELAYS)
            published.stored = True
            self.progress.notify()


@asynccontextmanager
async def monitors(system: System, names: Sequence[str]) -> AsyncIterator[dict[str, Bus]]:
    """A connection per node (an event's source must be its node), the node's inventory in KV first."""
    async with AsyncExitStack() as stack:
        buses: dict[str, Bus] = {}
        inventory = await system.admin.kv(INVENTORY_BUCKET)
        for name in names:
            buses[name] = await _bus(stack, system.issuer.harness(name), "health")
            state = initial_state(name, load_profile("dgx-h100"))
            await inventory.put(node_token(name), msgspec.json.encode(inventory_of(state)))
        yield buses


# --- reading a stream ----------------------------------------------------------------------------------------


class Stored(msgspec.Struct, frozen=True):
    sequence: int
    type: str
    """The event's name (``ClaimPrepared``), from ``ce-type``."""
    id: str
    data: dict[str, Any]


async def stored_messages(js: JetStreamContext, stream: str, subject: str) -> list[Stored]:
    """Every message of ``stream`` on ``subject`` (wildcards allowed), in stream order."""
    info = await js.stream_info(stream, subjects_filter=subject)
    wanted = sum((info.state.subjects or {}).values())
    found: list[Stored] = []
    if not wanted:
        return found
    subscription = await js.subscribe(
        subject, stream=stream, ordered_consumer=True, deliver_policy=api.DeliverPolicy.ALL
    )
    try:
        while len(found) < wanted:
            msg = await subscription.next_msg(timeout=5)
            headers = msg.headers or {}
            kind = headers.get("ce-type", "").split(".")  # io.gpudra.<EventName>.v<N>
            found.append(
                Stored(
                    sequence=msg.metadata.sequence.stream,
                    type=kind[2] if len(kind) == 4 else "",
                    id=headers.get("ce-id", ""),
                    data=msgspec.json.decode(msg.data) if msg.data.startswith(b"{") else {},
                )
            )
    finally:
        await subscription.unsubscribe()
    return found


# --- one round -----------------------------------------------------------------------------------------------


@dataclass
class Audit:
    """What the streams (the restarted server's copies) and the watchers hold of the round's events."""

    claim_events_owed: int = 0
    """Two per completed cycle: ClaimPrepared and ClaimUnprepared."""
    claim_events_stored: int = 0
    claim_events_delivered: int = 0
    redelivered: int = 0
    """Deliveries to the watchers beyond the first (at least once: an ack lost in the failover)."""
    claims_out_of_order: int = 0
    health_events: int = 0
    verdicts: int = 0
    verdicts_delivered: int = 0
    health_dead_lettered: int = 0
    stored_twice: int = 0
    """Messages stored again under a ``ce-id`` already stored: what the de-duplication window must prevent."""
    announced_twice: int = 0
    """Announcements made twice under different ids: a cycle's ClaimPrepared or ClaimUnprepared, a verdict."""
    last_verdict_seconds: float = math.nan
    """From the kill until the watcher had the last verdict of the round's health events."""
    problems: list[str] = field(default_factory=list)


@dataclass
class RoundResult:
    victim: str
    killed_at: float
    recovered_at: float
    """When every watched leader was back (``measure_leaders``), else when a claim event sent after the kill had
    reached the watcher."""
    leader_seconds: dict[str, float]
    other_led: list[str]
    """Buckets the victim also led when it was killed (they failed over too)."""
    service_errors: dict[str, int]
    monitor_publish_errors: int
    request_errors: int
    requests_timed_out: int
    duplicates_dropped: float
    calls: list[Call]
    audit: Audit
    restart_seconds: float
    catch_up_seconds: float
    warnings: Counter[tuple[str, str]]

    def latency_ms(self, operation: Operation, window: Window) -> list[float]:
        """Calls answered before the kill; those under way at some point between the kill and the recovery;
        those begun after."""

        def inside(call: Call) -> bool:
            if window == "before":
                return call.started + call.seconds < self.killed_at
            if window == "during":
                return call.started + call.seconds >= self.killed_at and call.started < self.recovered_at
            return call.started >= self.recovered_at

        return sorted(c.seconds * 1000 for c in self.calls if c.operation == operation and inside(c))


def percentile(values: Sequence[float], share: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(share * len(ordered)) - 1)]


def median(values: Iterable[float]) -> float:
    listed = [v for v in values if not math.isnan(v)]
    return statistics.median(listed) if listed else math.nan


class Round:
    """One kill of the server leading the claim and health streams, with work going on (see the module doc)."""

    def __init__(
        self,
        system: System,
        index: int,
        *,
        kill_consumer_leader: bool = True,
        cycles_before: int = 3,
        cycles_after: int = 2,
        fault_nodes: int = 2,
        faults_per_node: int = 48,
        request_timeout: float = 5.0,
        measure_leaders: bool = False,
        verdict_wait: float = HEALTH_ACK_WAIT + WAIT,
    ) -> None:
        self.system = system
        self.index = index
        self.kill_consumer_leader = kill_consumer_leader
        self.cycles_before = cycles_before
        self.cycles_after = cycles_after
        self.fault_nodes = [f"failover-{index}-n{n}" for n in range(fault_nodes)]
        self.faults_per_node = faults_per_node
        self.request_timeout = request_timeout
        self.measure_leaders = measure_leaders
        self.verdict_wait = verdict_wait

    async def run(self) -> RoundResult:
        system, admin = self.system, self.system.admin.nc
        claims = [await store_claim(system.kube, f"failover-{self.index}-{gpu}", [("gpu", gpu)]) for gpu in CLAIM_GPUS]
        victim = system.connected_to(system.claim_bus)
        survivor = next(s for s in system.servers if s is not victim)
        for asset in STREAMS:
            await move_leader(admin, asset, victim.name)
        await move_leader(admin, CONSUMER, victim.name if self.kill_consumer_leader else survivor.name)
        led = [*STREAMS, *([CONSUMER] if self.kill_consumer_leader else [])]
        led += [bucket for bucket in BUCKETS if await leader_of(admin, bucket) == victim.name]
        async with monitors(system, self.fault_nodes) as node_buses, _probe(system.issuer, survivor) as probe:
            watch = LeaderWatch(probe.nc, led, victim.name)
            load = ClaimLoad(system.kubelet, claims, self.request_timeout)
            burst = FaultBurst(node_buses, self.faults_per_node)
            duplicates_before, counts_before = duplicates_dropped(), Counter(system.tally.counts)
            work = asyncio.gather(load.run(), burst.run())
            try:
                await burst.progress.until(lambda: burst.stored() >= burst.first_half, what="half the burst stored")
                await load.progress.until(lambda: load.cycles() >= self.cycles_before, what="cycles before the kill")
                killed_at, killed_wall = time.monotonic(), dt.datetime.now(dt.UTC)
                await victim.kill()
                if self.measure_leaders:
                    watch.start(killed_at)
                burst.release.set()
                await burst.progress.until(lambda: burst.stored() == len(burst.events), what="the whole burst stored")
                await system.claim_watch.progress.until(
                    lambda: any(t > killed_wall for t in system.claim_watch.sent.values()),
                    what="a claim event sent after the kill delivered",
                )
                recovered_at = time.monotonic()
                load.finish(self.cycles_after)
                await asyncio.wait_for(work, WAIT)
            finally:
                if not work.done():
                    work.cancel()
                    with contextlib.suppress(BaseException):
                        await work
            await watch.wait()
            if watch.seconds:
                recovered_at = killed_at + max(watch.seconds.values())
        restart = time.monotonic()
        await victim.start(timeout=WAIT)
        restarted = time.monotonic()
        for asset in led:
            await caught_up(admin, asset, victim.name)
        caught = time.monotonic()
        for asset in STREAMS:
            await move_leader(admin, asset, victim.name)
        audit = await self._audit(load, burst, killed_at)
        counts = Counter(system.tally.counts)
        counts.subtract(counts_before)
        return RoundResult(
            victim=victim.name,
            killed_at=killed_at,
            recovered_at=recovered_at,
            leader_seconds=dict(watch.seconds),
            other_led=[asset_name(a) for a in led if a in BUCKETS],
            service_errors=service_errors(counts),
            monitor_publish_errors=len(burst.errors),
            request_errors=sum(len(c.errors) for c in load.calls),
            requests_timed_out=sum(1 for c in load.calls for e in c.errors if "did not answer" in e),
            duplicates_dropped=duplicates_dropped() - duplicates_before,
            calls=load.calls,
            audit=audit,
            restart_seconds=restarted - restart,
            catch_up_seconds=caught - restarted,
            warnings=+counts,
        )

    async def _audit(self, load: ClaimLoad, burst: FaultBurst, killed_at: float) -> Audit:
        """Waits until what is owed has arrived (or the wait runs out), then compares; problems are listed."""
        system = self.system
        cycles = load.cycles_of()
        health_ids = {p.event_id for p in burst.events}
        audit = Audit(claim_events_owed=2 * sum(cycles.values()), health_events=len(health_ids))

        def verdict_of() -> dict[str, str]:
            return {
                source: verdict_id
                for verdict_id, event in system.verdict_watch.events.items()
                if isinstance(event, FaultClassified)
                for source in event.source_event_ids
            }

        def claim_events_seen() -> int:
            return sum(
                isinstance(event, ClaimPrepared | ClaimUnprepared) and event.claim.uid in cycles
                for event in system.claim_watch.events.values()
            )

        with contextlib.suppress(AssertionError):
            await system.claim_watch.progress.until(
                lambda: claim_events_seen() >= audit.claim_events_owed, what="claim events delivered"
            )
        with contextlib.suppress(AssertionError):  # a dead letter arrives after the verdicts it replaces
            await system.verdict_watch.progress.until(
                lambda: health_ids <= set(verdict_of()) | set(system.deadletter_watch.events),
                timeout=self.verdict_wait,
                what="a verdict for every health event",
            )
        verdicts_in = {verdict_of().get(i, "") for i in health_ids} - {""}
        arrivals = [system.verdict_watch.arrived[i] for i in verdicts_in]
        audit.last_verdict_seconds = max(arrivals) - killed_at if arrivals else math.nan

        js = system.admin.js
        claim_events = [
            s
            for s in await stored_messages(js, CLAIMS_STREAM, CLAIM_EVENTS)
            if s.type in ("ClaimPrepared", "ClaimUnprepared") and s.data["claim"]["uid"] in cycles
        ]
        verdicts = [
            s
            for s in await stored_messages(js, HEALTH_STREAM, VERDICTS)
            if set(s.data.get("source_event_ids") or ()) & health_ids
        ]
        dead = [s for s in await stored_messages(js, DEADLETTER_STREAM, HEALTH_DEADLETTERS) if s.id in health_ids]
        claim_ids, verdict_ids = {s.id for s in claim_events}, {s.id for s in verdicts}
        delivered, judged = system.claim_watch.deliveries, system.verdict_watch.deliveries
        audit.claim_events_stored = len(claim_ids)
        audit.claim_events_delivered = sum(1 for i in claim_ids if delivered[i])
        audit.verdicts = len(verdict_ids)
        audit.verdicts_delivered = sum(1 for i in verdict_ids if judged[i])
        audit.redelivered = sum(delivered[i] - 1 for i in claim_ids if delivered[i]) + sum(
            judged[i] - 1 for i in verdict_ids if judged[i]
        )
        audit.health_dead_lettered = len({s.id for s in dead})
        twice = Counter(s.id for s in [*claim_events, *verdicts])
        audit.stored_twice = sum(n - 1 for n in twice.values())

        problems = audit.problems
        problems += [f"{event_id} is stored {n} times" for event_id, n in twice.items() if n > 1]
        _check_claims(audit, claim_events, cycles)
        _check_verdicts(audit, verdicts, dead, health_ids)
        problems += [
            f"claim event {s.type} {s.id} was stored but not delivered" for s in claim_events if not delivered[s.id]
        ]
        problems += [f"verdict {s.id} was stored but not delivered" for s in verdicts if not judged[s.id]]
        owed = system.claims.preparer.parts.outbox.owed
        problems += [f"claim_preparation still owes {type(e).__name__} {i}" for i, e in owed.items()]
        return audit


def _check_claims(audit: Audit, stored: list[Stored], cycles: dict[str, int]) -> None:
    """Per claim, in stream order and counted by ``ce-id``: ClaimPrepared then ClaimUnprepared, once per cycle."""
    for uid, count in sorted(cycles.items()):
        seen: set[str] = set()
        kinds: list[str] = []
        for s in stored:
            if s.data["claim"]["uid"] == uid and s.id not in seen:
                seen.add(s.id)
                kinds.append(s.type)
        wanted = ["ClaimPrepared", "ClaimUnprepared"] * count
        if kinds == wanted:
            continue
        for kind in ("ClaimPrepared", "ClaimUnprepared"):
            found = kinds.count(kind)
            if found > count:
                audit.announced_twice += found - count
                audit.problems.append(f"claim {uid}: {found} {kind} with different ids for {count} cycles")
            elif found < count:
                audit.problems.append(f"claim {uid}: {found} {kind} for {count} cycles")
        if sorted(kinds) == sorted(wanted):
            audit.claims_out_of_order += 1
            first = next(i for i, (a, b) in enumerate(zip(kinds, wanted, strict=True)) if a != b)
            around = " ".join(k.removeprefix("Claim") for k in kinds[max(0, first - 2) : first + 3])
            audit.problems.append(f"claim {uid}: out of order at its event {first + 1} of {len(kinds)}: {around}")


def _check_verdicts(audit: Audit, verdicts: list[Stored], dead: list[Stored], health_ids: set[str]) -> None:
    """Per health event: exactly one verdict, or a dead letter."""
    by_source: dict[str, set[str]] = {}
    for s in verdicts:
        for source in s.data.get("source_event_ids") or ():
            by_source.setdefault(source, set()).add(s.id)
    dead_ids = {s.id for s in dead}
    for event_id in sorted(health_ids):
        found = by_source.get(event_id, set())
        if len(found) > 1:
            audit.announced_twice += len(found) - 1
            audit.problems.append(f"health event {event_id} has {len(found)} verdicts: {sorted(found)}")
        elif not found and event_id not in dead_ids:
            audit.problems.append(f"health event {event_id} has neither a verdict nor a dead letter")
        elif found and event_id in dead_ids:
            audit.problems.append(f"health event {event_id} has a verdict and a dead letter")


@asynccontextmanager
async def _probe(issuer: Issuer, server: EmbeddedNats) -> AsyncIterator[Bus]:
    """A connection to one surviving server only, to ask who leads while the victim is down."""
    settings = msgspec.structs.replace(issuer.harness(name="probe"), nats_url=server.url)
    bus = await Bus.connect(settings, "probe")
    try:
        yield bus
    finally:
        await bus.close()
