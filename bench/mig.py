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

from bench._cycles import Samples, alternate, driving, print_latencies
from bench.prepare import store

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


async def run(rounds: int, calls: int) -> Samples:
    async with driving(MACHINE, mig_mode="dynamic") as (kube, client):
        claims = {"1": await store(kube, "mig-one", *ONE), "16": await store(kube, "mig-sixteen", *SIXTEEN)}
        return await alternate(client, claims, rounds, calls)


def report(samples: Samples, command: str) -> None:
    print(f"$ {command}")
    print("dynamic MIG claims through the shim (ms; label: devices in the claim)")
    print_latencies(samples, width=2)
    ratio = statistics.median(samples["16"]["prepare"]) / statistics.median(samples["1"]["prepare"])
    verdict = "met" if ratio <= GOAL_RATIO else "MISSED"
    print(f"  prepare p50, 16 devices / 1 device: {ratio:.2f}   (goal <= {GOAL_RATIO:g}: {verdict})")


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench mig", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10, help="rounds, each with both claims in turn")
    parser.add_argument("--calls", type=int, default=10, help="prepare+unprepare cycles of each claim per round")
    args = parser.parse_args(argv)
    report(asyncio.run(run(args.rounds, args.calls)), " ".join(["python -m bench mig", *argv]))
