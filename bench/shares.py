"""Shares of a GPU by consumable capacity through the kubelet's path, beside a claim of a whole GPU.

``gpudra up`` runs with ``GPUDRA_CONSUMABLE_CAPACITY=true`` on a simulated 8 x H100 (MIG off); this process plays
the kubelet over the real sockets, and ``gpudra claim create``'s allocator (``cli/shares.py``) allocates the
shares. Three claims, their rounds alternating so machine noise hits all alike:

- whole: gpu-0 allocated whole, as before (the baseline);
- first share: 20Gi of gpu-1, alone on it, so each prepare starts the GPU's MPS daemon (and exclusive-process
  mode) and each unprepare stops it;
- joining share: 20Gi of gpu-2, where another claim's share stays prepared the whole run, so each prepare
  joins the running daemon as one more client and each unprepare leaves it running.

Goal: a joining share's prepare p50 within 1.5x of the whole GPU's: it adds a fit check and a record, not another
round trip. The first share also puts the GPU in exclusive-process mode and starts the daemon (on the simulated
node a durable machine-state write and the daemon's record; on a real node a process): its ratio is shown, with no
goal.

    python -m bench shares [--rounds 10] [--calls 10]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
from typing import Any

from bench._cycles import Claim, Samples, alternate, driving, print_latencies
from bench.prepare import DRIVER, NODE, store
from cli.claims import allocation, claim_object, published_devices
from cli.shares import allocate
from libs.kube import RESOURCE_CLAIMS, LocalKube

MACHINE = """\
# 8 x H100, MIG off: every GPU shareable by consumable capacity.
name: bench-h100-shared
gpu_model: H100-SXM5-80GB
gpu_count: 8
numa_nodes: 2
nvlink_links: 18
"""
SHARE = {"memory": 20 * 2**30}
GOAL_RATIO = 1.5


async def store_share(kube: LocalKube, name: str, device: str) -> Claim:
    """A share of ``device`` as ``gpudra claim create NAME --device DEVICE --memory 20Gi`` allocates it."""
    published = await published_devices(kube, NODE, DRIVER)
    claims: list[dict[str, Any]] = (await kube.list(RESOURCE_CLAIMS)).items
    results = allocate([("gpu", device)], SHARE, published, claims, node=NODE, driver=DRIVER)
    claim = claim_object(name, "default", [("gpu", device)], None, DRIVER, capacity=SHARE)
    created = await kube.create(RESOURCE_CLAIMS, claim)
    created["status"] = {"allocation": allocation(results, None, NODE, DRIVER)}
    await kube.update_status(RESOURCE_CLAIMS, created)
    return ("default", name, str(created["metadata"]["uid"]))


async def run(rounds: int, calls: int) -> Samples:
    async with driving(MACHINE, settings={"GPUDRA_CONSUMABLE_CAPACITY": "true"}) as (kube, client):
        resident = await store_share(kube, "resident", "gpu-2")
        claims = {
            "whole": await store(kube, "whole", "gpu-0"),
            "first share": await store_share(kube, "first", "gpu-1"),
            "joining share": await store_share(kube, "joining", "gpu-2"),
        }
        if error := (await client.prepare([resident]))[resident[2]].error:
            raise RuntimeError(f"prepare of the resident share: {error}")
        return await alternate(client, claims, rounds, calls)


def report(samples: Samples, command: str) -> None:
    print(f"$ {command}")
    print("claims through the shim (ms)")
    print_latencies(samples, width=13)
    whole = statistics.median(samples["whole"]["prepare"])
    first = statistics.median(samples["first share"]["prepare"]) / whole
    print(f"  prepare p50, first share / whole GPU: {first:.2f}   (starts the GPU's daemon: no goal)")
    ratio = statistics.median(samples["joining share"]["prepare"]) / whole
    verdict = "met" if ratio <= GOAL_RATIO else "MISSED"
    print(f"  prepare p50, joining share / whole GPU: {ratio:.2f}   (goal <= {GOAL_RATIO:g}: {verdict})")


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench shares", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10, help="rounds, each with the three claims in turn")
    parser.add_argument("--calls", type=int, default=10, help="prepare+unprepare cycles of each claim per round")
    args = parser.parse_args(argv)
    report(asyncio.run(run(args.rounds, args.calls)), " ".join(["python -m bench shares", *argv]))
