"""The bus library beside raw nats-py, measured in the same run on the same nats-server.

Two figures, each as a median over alternating rounds (so machine noise hits both sides alike):
- publish → consume throughput: N events published one by one (each waiting for its JetStream ack) while a
  durable pull consumer processes and acks them; events/s from the first publish to the last ack.
- request/reply latency: p50 and p99 of one command round trip (nats.micro endpoint vs a plain subscription).

The library's extra work per event is the CloudEvents envelope, msgspec validation, trace context and spans.
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

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import api

from libs.bus import Bus, ConsumerSpec, Endpoint
from libs.events import Envelope, Event
from libs.events.catalogue import ClaimRef, ClaimUnprepared, PrepareClaims, PrepareClaimsReply
from libs.natsserver import EmbeddedNats
from libs.settings import CommonSettings
from libs.telemetry import configure_tracing

CLAIM = ClaimRef(namespace="default", name="bench", uid="00000000-0000-0000-0000-000000000000")


async def library_throughput(bus: Bus, events: int, round_no: int) -> float:
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
    started = time.perf_counter()
    for _ in range(events):
        await bus.publish(event)
    await done.wait()
    elapsed = time.perf_counter() - started
    await consumer.stop()
    return events / elapsed


async def raw_throughput(url: str, events: int, round_no: int) -> float:
    nc = await nats.connect(url)
    js = nc.jetstream()
    subject = f"gpudra.v1.raw-{round_no}.claims.unprepared"
    durable = f"raw{round_no}"
    await js.add_consumer(
        "GPUDRA_CLAIMS",
        api.ConsumerConfig(durable_name=durable, filter_subject=subject, ack_policy=api.AckPolicy.EXPLICIT),
    )
    subscription = await js.pull_subscribe_bind(durable=durable, stream="GPUDRA_CLAIMS")
    payload = ClaimUnprepared(node=f"raw-{round_no}", claim=CLAIM)
    import msgspec

    body = msgspec.json.encode(payload)

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
    started = time.perf_counter()
    for index in range(events):
        await js.publish(subject, body, headers={"Nats-Msg-Id": f"{round_no}-{index}"})
    await reader
    elapsed = time.perf_counter() - started
    await subscription.unsubscribe()
    await nc.close()
    return events / elapsed


async def latencies(call: Callable[[], Awaitable[object]], requests: int) -> list[float]:
    samples = []
    for _ in range(requests):
        started = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - started) * 1e6)
    return samples


async def library_latency(bus: Bus, requests: int) -> list[float]:
    command = PrepareClaims(claims=[CLAIM])
    return await latencies(lambda: bus.request("bench", command, PrepareClaimsReply, timeout=5), requests)


async def raw_latency(nc: Client, requests: int) -> list[float]:
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
        lib_rates, raw_rates, lib_lat, raw_lat = [], [], [], []
        for round_no in range(rounds):
            raw_rates.append(await raw_throughput(server.url, events, round_no))
            lib_rates.append(await library_throughput(bus, events, round_no))
            raw_lat += await raw_latency(raw, requests)
            lib_lat += await library_latency(bus, requests)
        await raw.close()
        await bus.close()
        await server.stop()
    report(lib_rates, raw_rates, lib_lat, raw_lat, events, requests, rounds)


def report(
    lib_rates: list[float], raw_rates: list[float], lib_lat: list[float], raw_lat: list[float], *sizes: int
) -> None:
    lib_rate, raw_rate = statistics.median(lib_rates), statistics.median(raw_rates)
    events, requests, rounds = sizes
    print(f"publish→consume ({events} events x {rounds} rounds, median events/s)")
    print(f"  raw nats-py   {raw_rate:9.0f}/s")
    print(f"  gpudra bus    {lib_rate:9.0f}/s   overhead {100 * (raw_rate / lib_rate - 1):5.1f} % of raw")
    print(f"request/reply ({requests} requests x {rounds} rounds, µs)")
    for name, samples in (("raw nats-py", raw_lat), ("gpudra bus ", lib_lat)):
        print(f"  {name}   p50 {pct(samples, 0.5):7.0f}   p99 {pct(samples, 0.99):7.0f}")
    overhead = 100 * (pct(lib_lat, 0.5) / pct(raw_lat, 0.5) - 1)
    print(f"  p50 overhead {overhead:5.1f} % of raw")


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench bus", description=__doc__)
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    asyncio.run(run(args.events, args.requests, args.rounds))
