"""Dynamic MIG through the kubelet's path: a claim of one MIG device beside a claim of sixteen.

``gpudra up`` runs with ``GPUDRA_MIG_MODE=dynamic`` on a simulated 8 x H100 with MIG enabled and no MIG device
yet; this process plays the kubelet over the real sockets. One claim holds one 3g.40gb device, the other two
3g.40gb devices on each of the eight GPUs. Each prepare creates the claim's devices (recorded first, see
``services/claim_preparation/mig.py``) and each unprepare destroys them. The rounds alternate the two claims,
so machine noise hits both alike.

Goal: the sixteen-device prepare's p50 within 3x of the one-device prepare's: the devices are independent, so
a claim of many should wait for the slowest creation, not for the sum.

    python -m bench mig [--rounds 10] [--calls 10]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from bench._stats import pct
from bench.prepare import DRIVER, store, up_system
from libs.kube import LocalKube
from libs.kubeletclient import KubeletClient

MACHINE = """\
# 8 x H100 with MIG enabled and no MIG device: dynamic MIG creates them per claim.
name: bench-h100-dynamic
gpu_model: H100-SXM5-80GB
gpu_count: 8
numa_nodes: 2
nvlink_links: 18
mig_enabled: all
"""
ONE = ["gpu-0-mig-3g40gb-9-0"]
SIXTEEN = [f"gpu-{g}-mig-3g40gb-9-{p}" for g in range(8) for p in (0, 4)]
GOAL_RATIO = 3.0

Claim = tuple[str, str, str]


async def cycle(client: KubeletClient, claim: Claim, samples: dict[str, list[float]]) -> None:
    for operation, call in (("prepare", client.prepare), ("unprepare", client.unprepare)):
        began = time.perf_counter()
        error = (await call([claim]))[claim[2]].error
        samples[operation].append((time.perf_counter() - began) * 1000)
        if error:
            raise RuntimeError(f"{operation} of {claim[1]}: {error}")


async def run(rounds: int, calls: int) -> dict[str, dict[str, list[float]]]:
    samples: dict[str, dict[str, list[float]]] = {size: {"prepare": [], "unprepare": []} for size in ("1", "16")}
    with tempfile.TemporaryDirectory(prefix="gpudra-bench-", dir="/tmp") as tmp:  # short: unix socket paths
        root = Path(tmp)
        async with up_system(root, MACHINE, mig_mode="dynamic") as running:
            kube = await LocalKube.open(running.bus.js)
            claims = {"1": await store(kube, "mig-one", *ONE), "16": await store(kube, "mig-sixteen", *SIXTEEN)}
            registration = root / "kubelet" / "plugins_registry" / f"{DRIVER}-reg.sock"
            client = await KubeletClient.register(registration, driver_name=DRIVER)
            try:
                warm_up: dict[str, list[float]] = {"prepare": [], "unprepare": []}
                for claim in claims.values():
                    for _ in range(3):
                        await cycle(client, claim, warm_up)
                for _ in range(rounds):
                    for size, claim in claims.items():
                        for _ in range(calls):
                            await cycle(client, claim, samples[size])
            finally:
                await client.close()
    return samples


def report(samples: dict[str, dict[str, list[float]]], command: str) -> None:
    print(f"$ {command}")
    print("dynamic MIG claims through the shim (ms)")
    for size, by_operation in samples.items():
        for operation, values in by_operation.items():
            print(
                f"  {size:>2} device(s)  {operation:<9}  p50 {statistics.median(values):7.2f}"
                f"   p99 {pct(values, 0.99):7.2f}   ({len(values)} calls)"
            )
    ratio = statistics.median(samples["16"]["prepare"]) / statistics.median(samples["1"]["prepare"])
    verdict = "met" if ratio <= GOAL_RATIO else "MISSED"
    print(f"  prepare p50, 16 devices / 1 device: {ratio:.2f}   (goal <= {GOAL_RATIO:g}: {verdict})")


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench mig", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10, help="rounds, each with both claims in turn")
    parser.add_argument("--calls", type=int, default=10, help="prepare+unprepare cycles of each claim per round")
    args = parser.parse_args(argv)
    report(asyncio.run(run(args.rounds, args.calls)), " ".join(["python -m bench mig", *argv]))
