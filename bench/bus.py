"""The bus library beside raw nats-py, measured in the same run on the same nats-server.

Two figures, each as a median over alternating rounds (so machine noise hits both sides alike):
- publish → consume throughput: N events published one by one (each waiting for its JetStream ack) while a
  durable pull consumer processes and acks them; events/s from the first publish to the last ack.
- request/reply latency: p50 and p99 of one command round trip (nats.micro endpoint vs a plain subscription).

The library's extra work per event is the CloudEvents envelope, msgspec validation, trace context and spans.
Beside wall-clock rates, the CPU time this process spent per event is printed: on a shared 2-core machine it
is steadier than the wall clock (the nats-server's own CPU is not included, for either side).
Goal: overhead under 30 % of raw nats-py.

Everything runs twice per round, on two servers: one with authentication and permissions as ``gpudra up`` runs
it (a user JWT whose allow lists are a node's: claim_preparation's and the shim's, plus what the bench itself
does), one without any. The difference is the cost of authentication; the server's own CPU time per event
(read from /proc) is printed for both, since that is where permissions are checked.

    python -m bench bus [--events 3000] [--requests 2000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import msgspec
import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import api

from bench._stats import pct
from libs.bus import Bus, ConsumerSpec, Endpoint
from libs.events import Envelope, Event, encode
from libs.events.catalogue import ClaimRef, ClaimUnprepared, PrepareClaims, PrepareClaimsReply
from libs.natsserver import EmbeddedNats
from libs.settings import CommonSettings
from libs.telemetry import configure_tracing
from libs.trust.authority import Authority
from libs.trust.grants import serve
from libs.trust.permissions import Permissions
from libs.trust.roles import Role, permissions

CLAIM = ClaimRef(namespace="default", name="bench", uid="00000000-0000-0000-0000-000000000000")


async def library_throughput(bus: Bus, events: int, round_no: int) -> tuple[float, float]:
    done = asyncio.Event()
    seen = 0

    async def handle(_: Envelope[Event]) -> None:
        nonlocal seen
        seen += 1
        if seen == events:
            done.set()

    subject = f"gpudra.v1.lib-{round_no}.claims.unprepared"
    spec = ConsumerSpec(stream="GPUDRA_CLAIMS", durable=f"lib{round_no}", filter_subjects=[subject], batch=256)
    consumer = await bus.consume(spec, handle)
    event = ClaimUnprepared(node=f"lib-{round_no}", claim=CLAIM)
    started, cpu = time.perf_counter(), time.process_time()
    for _ in range(events):
        await bus.publish(event)
    await done.wait()
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    await consumer.stop()
    return events / elapsed, cpu / events * 1e6


async def raw_throughput(side: Side, events: int, round_no: int, *, cloudevents: bool) -> tuple[float, float]:
    """Plain nats-py: same pattern, no library; with ``cloudevents`` it carries the same headers we send."""
    nc = await side.raw_connect()
    js = nc.jetstream()
    tag = f"{'ce' if cloudevents else 'raw'}-{round_no}"
    subject = f"gpudra.v1.{tag}.claims.unprepared"
    durable = tag.replace("-", "")
    await js.add_consumer(
        "GPUDRA_CLAIMS",
        api.ConsumerConfig(durable_name=durable, filter_subject=subject, ack_policy=api.AckPolicy.EXPLICIT),
    )
    subscription = await js.pull_subscribe_bind(durable=durable, stream="GPUDRA_CLAIMS")
    payload = ClaimUnprepared(node=tag, claim=CLAIM)
    headers, body = encode(payload, source="/gpudra/bench/raw")
    headers = headers if cloudevents else {}

    async def consume() -> None:
        seen = 0
        while seen < events:
            try:
                for msg in await subscription.fetch(256, timeout=1):
                    msgspec.json.decode(msg.data)
                    await msg.ack()
                    seen += 1
            except nats.errors.TimeoutError:
                continue

    reader = asyncio.create_task(consume())
    started, cpu = time.perf_counter(), time.process_time()
    for index in range(events):
        await js.publish(subject, body, headers={**headers, "Nats-Msg-Id": f"{tag}-{index}"})
    await reader
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    await subscription.unsubscribe()
    await nc.close()
    return events / elapsed, cpu / events * 1e6


async def latencies(call: Callable[[], Awaitable[object]], requests: int) -> tuple[list[float], float]:
    """Round-trip times (µs) and this process's CPU µs per request (both ends run here)."""
    samples = []
    cpu = time.process_time()
    for _ in range(requests):
        started = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - started) * 1e6)
    return samples, (time.process_time() - cpu) / requests * 1e6


async def library_latency(bus: Bus, requests: int) -> tuple[list[float], float]:
    command = PrepareClaims(claims=[CLAIM])
    return await latencies(lambda: bus.request("bench", command, PrepareClaimsReply, timeout=5), requests)


async def raw_latency(nc: Client, requests: int) -> tuple[list[float], float]:
    body = b'{"claims":[{"namespace":"default","name":"bench","uid":"00000000-0000-0000-0000-000000000000"}]}'
    return await latencies(lambda: nc.request("raw.bench.prepare", body, timeout=5), requests)


BENCH_PERMISSIONS = (
    permissions([Role.CLAIM_PREPARATION, Role.KUBELET_SHIM], principal="bench", node="bench")
    | serve("bench", "bench", PrepareClaims)
    | Permissions(
        publish=frozenset(
            {"gpudra.v1.*.claims.>", "$JS.API.CONSUMER.>", "$JS.ACK.GPUDRA_CLAIMS.>", "raw.bench.prepare"}
        ),
        subscribe=frozenset({"raw.bench.prepare", "_INBOX.>"}),
    )
)
"""A node's allow lists (what the server checks each message against), plus the bench's own subjects."""


class Side:
    """One nats-server and the clients of one side: with authentication (``creds``) or without."""

    def __init__(self, server: EmbeddedNats, creds: str = "", bootstrap_creds: str = "") -> None:
        self.server = server
        self.creds = creds
        self.bootstrap_creds = bootstrap_creds
        self.results = Results()

    async def raw_connect(self) -> Client:
        return await nats.connect(self.server.url, user_credentials=self.creds or None)

    async def start(self) -> None:
        await self.server.start()
        settings = CommonSettings(nats_url=self.server.url, node_name="bench", nats_creds=self.bootstrap_creds)
        bootstrapper = await Bus.connect(settings, "bootstrap")
        await bootstrapper.bootstrap()
        await bootstrapper.close()
        self.bus = await Bus.connect(msgspec.structs.replace(settings, nats_creds=self.creds), "bench")

        async def answer(command: PrepareClaims) -> PrepareClaimsReply:
            return PrepareClaimsReply(results={})

        await self.bus.serve("0.0.0", [Endpoint(PrepareClaims, answer)])
        self.raw = await self.raw_connect()

        async def echo(msg: Msg) -> None:
            await msg.respond(b'{"results":{}}')

        await self.raw.subscribe("raw.bench.prepare", cb=echo)

    async def round(self, events: int, requests: int, round_no: int) -> None:
        server_cpu = process_cpu(self.server.pid)
        self.results.add("raw", await raw_throughput(self, events, round_no, cloudevents=False))
        self.results.add("ce", await raw_throughput(self, events, round_no, cloudevents=True))
        self.results.add("lib", await library_throughput(self.bus, events, round_no))
        self.results.server_cpu.append((process_cpu(self.server.pid) - server_cpu) / (3 * events) * 1e6)
        self.results.add_latency("raw", await raw_latency(self.raw, requests))
        self.results.add_latency("lib", await library_latency(self.bus, requests))

    async def stop(self) -> None:
        await self.raw.close()
        await self.bus.close()
        await self.server.stop()


def process_cpu(pid: int | None) -> float:
    """Seconds of CPU (user + system) a process has used, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def run(events: int, requests: int, rounds: int) -> None:
    configure_tracing("bench", "bench")
    with tempfile.TemporaryDirectory() as tmp:
        authority = Authority.open(Path(tmp) / "trust")
        users = Path(tmp) / "trust" / "users"
        creds = authority.write(users / "bench.creds", "bench", BENCH_PERMISSIONS)
        bootstrap = authority.issue(users / "bootstrap.creds", "bootstrap", [Role.BOOTSTRAP], "bench")
        sides = {
            "authenticated": Side(EmbeddedNats(Path(tmp) / "auth", auth=authority), str(creds), str(bootstrap)),
            "open": Side(EmbeddedNats(Path(tmp) / "open")),
        }
        for side in sides.values():
            await side.start()
        for round_no in range(rounds):
            for side in sides.values():
                await side.round(events, requests, round_no)
        for side in sides.values():
            await side.stop()
    print("# with authentication and permissions, as gpudra up runs")
    sides["authenticated"].results.report(events, requests, rounds)
    print("# without authentication (not a mode gpudra runs in; the baseline for its cost)")
    sides["open"].results.report(events, requests, rounds)
    report_cost(sides["authenticated"].results, sides["open"].results)


def report_cost(auth: Results, open_: Results) -> None:
    med = statistics.median
    rate = med(open_.rates["lib"]) / med(auth.rates["lib"]) - 1
    latency = pct(auth.latency["lib"], 0.5) / pct(open_.latency["lib"], 0.5) - 1
    print("cost of authentication (gpudra bus, authenticated vs open)")
    print(f"  publish→consume  {100 * rate:5.1f} % wall")
    print(f"  request/reply    {100 * latency:5.1f} % p50")
    print(f"  nats-server CPU  {med(auth.server_cpu):5.1f} vs {med(open_.server_cpu):5.1f} µs per event")


class Results:
    def __init__(self) -> None:
        self.rates: dict[str, list[float]] = {"raw": [], "ce": [], "lib": []}
        self.event_cpu: dict[str, list[float]] = {"raw": [], "ce": [], "lib": []}
        self.latency: dict[str, list[float]] = {"raw": [], "lib": []}
        self.request_cpu: dict[str, list[float]] = {"raw": [], "lib": []}
        self.server_cpu: list[float] = []
        """nats-server CPU µs per event over the three throughput runs of a round."""

    def add(self, side: str, throughput: tuple[float, float]) -> None:
        self.rates[side].append(throughput[0])
        self.event_cpu[side].append(throughput[1])

    def add_latency(self, side: str, latency: tuple[list[float], float]) -> None:
        self.latency[side] += latency[0]
        self.request_cpu[side].append(latency[1])

    def report(self, events: int, requests: int, rounds: int) -> None:
        med = statistics.median
        rate = {side: med(values) for side, values in self.rates.items()}
        cpu = {side: med(values) for side, values in self.event_cpu.items()}
        print(f"publish→consume ({events} events x {rounds} rounds; medians)")
        print(f"  raw nats-py               {rate['raw']:7.0f} events/s   {cpu['raw']:5.0f} µs CPU/event")
        print(f"  raw + CloudEvents headers {rate['ce']:7.0f} events/s   {cpu['ce']:5.0f} µs CPU/event")
        print(f"  gpudra bus                {rate['lib']:7.0f} events/s   {cpu['lib']:5.0f} µs CPU/event")
        for base, label in (("raw", "raw nats-py"), ("ce", "raw + same headers")):
            print(
                f"  overhead vs {label:<19} {100 * (rate[base] / rate['lib'] - 1):5.1f} % wall   "
                f"{100 * (cpu['lib'] / cpu[base] - 1):5.1f} % CPU"
            )
        p50 = {side: pct(values, 0.5) for side, values in self.latency.items()}
        rcpu = {side: med(values) for side, values in self.request_cpu.items()}
        print(f"request/reply ({requests} requests x {rounds} rounds; µs)")
        for side, name in (("raw", "raw nats-py"), ("lib", "gpudra bus ")):
            print(
                f"  {name}               p50 {p50[side]:6.0f}   p99 {pct(self.latency[side], 0.99):6.0f}   "
                f"CPU/request {rcpu[side]:5.0f}"
            )
        print(
            f"  overhead vs raw nats-py     {100 * (p50['lib'] / p50['raw'] - 1):5.1f} % p50    "
            f"{100 * (rcpu['lib'] / rcpu['raw'] - 1):5.1f} % CPU"
        )


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench bus", description=__doc__)
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    asyncio.run(run(args.events, args.requests, args.rounds))
