"""Claims prepared and unprepared in turn through the kubelet's real sockets, as the claim benches time them.

``driving`` runs ``gpudra up`` and connects to it as the kubelet.

A bench stores its claims, then ``alternate`` plays the kubelet: a few warm-up cycles of each claim, then rounds
that take the claims in turn, so machine noise hits all of them alike; ``print_latencies`` prints p50 and p99 of
each claim's prepares and unprepares.
"""

from __future__ import annotations

import contextlib
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

from bench._stats import pct
from bench.prepare import DRIVER, up_system
from libs.kube import LocalKube
from libs.kubeletclient import KubeletClient

Claim = tuple[str, str, str]
"""(namespace, name, uid), as the kubelet names a claim."""
Samples = dict[str, dict[str, list[float]]]
"""Claim label → operation → milliseconds."""
WARM_UP = 3


async def cycle(client: KubeletClient, claim: Claim, samples: dict[str, list[float]]) -> None:
    for operation, call in (("prepare", client.prepare), ("unprepare", client.unprepare)):
        began = time.perf_counter()
        error = (await call([claim]))[claim[2]].error
        samples[operation].append((time.perf_counter() - began) * 1000)
        if error:
            raise RuntimeError(f"{operation} of {claim[1]}: {error}")


@contextlib.asynccontextmanager
async def driving(
    machine: str, *, mig_mode: str = "static", settings: Mapping[str, str] | None = None
) -> AsyncIterator[tuple[LocalKube, KubeletClient]]:
    """``gpudra up`` on ``machine`` (a profile's YAML), its standalone store, and the kubelet's client of its GPU
    driver, until the block exits."""
    with tempfile.TemporaryDirectory(prefix="gpudra-bench-", dir="/tmp") as tmp:  # short: unix socket paths
        root = Path(tmp)
        async with up_system(root, machine, mig_mode=mig_mode, settings=settings) as running:
            kube = await LocalKube.open(running.bus.js)
            registration = root / "kubelet" / "plugins_registry" / f"{DRIVER}-reg.sock"
            client = await KubeletClient.register(registration, driver_name=DRIVER)
            try:
                yield kube, client
            finally:
                await client.close()


async def alternate(client: KubeletClient, claims: Mapping[str, Claim], rounds: int, calls: int) -> Samples:
    samples: Samples = {label: {"prepare": [], "unprepare": []} for label in claims}
    warm_up: dict[str, list[float]] = {"prepare": [], "unprepare": []}
    for claim in claims.values():
        for _ in range(WARM_UP):
            await cycle(client, claim, warm_up)
    for _ in range(rounds):
        for label, claim in claims.items():
            for _ in range(calls):
                await cycle(client, claim, samples[label])
    return samples


def print_latencies(samples: Samples, width: int) -> None:
    for label, by_operation in samples.items():
        for operation, values in by_operation.items():
            print(
                f"  {label:>{width}}  {operation:<9}  p50 {statistics.median(values):7.2f}"
                f"   p99 {pct(values, 0.99):7.2f}   ({len(values)} calls)"
            )
