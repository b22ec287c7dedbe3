"""The bus library beside raw nats-py, measured in the same run on the same nats-server.

Two figures, each as a median over alternating rounds (so machine noise hits both sides alike):
- publish → consume throughput: N events published one by one (each waiting for its JetStream ack) while a
  durable pull consumer processes and acks them; events/s from the first publish to the last ack.
- request/reply latency: p50 and p99 of one command round trip (nats.micro endpoint vs a plain subscription).

The library's extra work per event is the CloudEvents envelope, msgspec validation, trace context and spans.
Beside wall-clock rates, the CPU time this process spent per event is printed: on a shared 2-core machine it
is steadier than the wall clock (the nats-server's own CPU is not included, for either side).
Goal: overhead under 30 % of raw nats-py.

    python -m bench bus [--events 3000] [--requests 2000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
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

from libs.bus import Bus, ConsumerSpec, Endpoint
from libs.events import Envelope, Event, encode
from libs.events.catalogue import ClaimRef, ClaimUnprepared, PrepareClaims, PrepareClaimsReply
from libs.natsserver import EmbeddedNats
from libs.settings import CommonSettings
from libs.telemetry import configure_tracing

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


async def raw_throughput(url: str, events: int, round_no: int, *, cloudevents: bool) -> tuple[float, float]:
    """Plain nats-py: same pattern, no library; with ``cloudevents`` it carries the same headers we send."""
    nc = await nats.connect(url)
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


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(events: int, requests: int, rounds: int) -> None:
    configure_tracing("bench", "bench")
    with tempfile.TemporaryDirectory() as tmp:
        server = EmbeddedNats(Path(tmp))
        await server.start()
        bus = await Bus.connect(CommonSettings(nats_url=server.url, node_name="bench"), "bench")
        await bus.bootstrap()

        async def answer(command: PrepareClaims) -> PrepareClaimsReply:
            return PrepareClaimsReply(results={})

        await bus.serve("0.0.0", [Endpoint(PrepareClaims, answer)])
        raw = await nats.connect(server.url)

        async def echo(msg: Msg) -> None:
            await msg.respond(b'{"results":{}}')

        await raw.subscribe("raw.bench.prepare", cb=echo)
        results = Results()
        for round_no in range(rounds):
            results.add("raw", await raw_throughput(server.url, events, round_no, cloudevents=False))
            results.add("ce", await raw_throughput(server.url, events, round_no, cloudevents=True))
            results.add("lib", await library_throughput(bus, events, round_no))
            results.add_latency("raw", await raw_latency(raw, requests))
            results.add_latency("lib", await library_latency(bus, requests))
        await raw.close()
        await bus.close()
        await server.stop()
    results.report(events, requests, rounds)


class Results:
    def __init__(self) -> None:
        self.rates: dict[str, list[float]] = {"raw": [], "ce": [], "lib": []}
        self.event_cpu: dict[str, list[float]] = {"raw": [], "ce": [], "lib": []}
        self.latency: dict[str, list[float]] = {"raw": [], "lib": []}
        self.request_cpu: dict[str, list[float]] = {"raw": [], "lib": []}

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
