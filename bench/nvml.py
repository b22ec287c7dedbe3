"""Read-only NVML timings on a real NVIDIA machine: how long discovery and the event stream take.

    python -m bench nvml [--rounds 20]

Discovery is what the discovery service does at start and on every resync; the event stream is what the
health monitors hold open. Nothing here changes a GPU setting. Without NVML it says so and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from libs.devices.errors import BackendUnavailable
from libs.devices.nvml import NvmlBackend


async def run(rounds: int) -> None:
    started = time.perf_counter()
    try:
        backend = await NvmlBackend.open("bench", event_wait_ms=200)
    except BackendUnavailable as exc:
        print(f"no NVML here: {exc}")
        return
    opened = time.perf_counter() - started
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        inventory = await backend.inventory()
        samples.append((time.perf_counter() - started) * 1000)
    events = backend.events()
    started = time.perf_counter()
    first = asyncio.ensure_future(anext(events))
    done, _ = await asyncio.wait({first}, timeout=1.0)
    waited = time.perf_counter() - started
    first.cancel()
    started = time.perf_counter()
    await backend.close()
    closed = time.perf_counter() - started
    print(
        f"NVML init: {opened * 1000:.1f} ms; {len(inventory.gpus)} GPU(s), {len(inventory.mig_devices)} MIG device(s)"
    )
    median = statistics.median(samples)
    print(f"inventory(): first {samples[0]:.1f} ms, median of {rounds} {median:.1f} ms (handles cached)")
    print(f"event stream: {'an event' if done else 'no event'} within {waited:.2f} s; close() {closed * 1000:.0f} ms")


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench nvml", description=__doc__)
    parser.add_argument("--rounds", type=int, default=20)
    asyncio.run(run(parser.parse_args(argv).rounds))
