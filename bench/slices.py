"""ResourceSlice building: one big node checked every way, and a simulated fleet built node by node.

Figures, each a median over rounds:
- 8 x H100 with dynamic MIG (208 devices, 8 counter sets) on Kubernetes 1.34 and 1.35: build, the API
  server rules check (libs.slices.rules), and the OpenAPI schema check (kubernetes-validate, strict).
- a fleet of N simulated nodes (a mix of profiles and MIG modes, as a real cluster has): build time per
  node, and the publisher's steady-state diff (desired vs an unchanged copy) per node.
Goal: building under 20 ms per node.

    python -m bench slices [--nodes 1000] [--rounds 5]
"""

import argparse
import copy
import functools
import statistics
import time
from collections.abc import Callable
from typing import Any

from libs.devices.model import Inventory
from libs.devices.simulated import load_profile
from libs.devices.simulated.ops import initial_state, inventory_of
from libs.slices import MigMode, build_slices, diff_slices, pool_problems

FLEET_MIX = [
    ("dgx-h100-mig", MigMode.DYNAMIC),
    ("mixed-mig", MigMode.STATIC),
    ("dgx-b200", MigMode.STATIC),
    ("gb200-nvl72", MigMode.STATIC),
]


def inventory(profile: str, node: str) -> Inventory:
    return inventory_of(initial_state(node, load_profile(profile)))


def median_ms(work: Callable[[], object], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        work()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def schema_check(slices: list[dict[str, Any]], minor: int) -> None:
    import kubernetes_validate

    for resource_slice in slices:
        kubernetes_validate.validate(resource_slice, f"1.{minor}.0", strict=True)


def big_node(rounds: int) -> None:
    from kubernetes_validate import utils

    # The schema file is read on every call; a long-running checker would read it once.
    utils.schema_contents = functools.lru_cache(maxsize=None)(utils.schema_contents)
    h100 = inventory("dgx-h100-mig", "node-0")
    for minor in (34, 35):
        slices = build_slices(h100, k8s_minor=minor, generation=1, mig_mode=MigMode.DYNAMIC)
        devices = sum(len(s["spec"].get("devices") or ()) for s in slices)
        build = median_ms(
            functools.partial(build_slices, h100, k8s_minor=minor, generation=1, mig_mode=MigMode.DYNAMIC), rounds
        )
        rules = median_ms(functools.partial(pool_problems, slices, minor), rounds)
        schema = median_ms(functools.partial(schema_check, slices, minor), rounds)
        print(
            f"8xH100 dynamic MIG, Kubernetes 1.{minor}: {len(slices)} slices, {devices} devices; "
            f"build {build:.1f} ms, rules check {rules:.1f} ms, schema check {schema:.0f} ms"
        )


def fleet(nodes: int, rounds: int) -> None:
    start = time.perf_counter()
    members = [
        (profile, mode, inventory(profile, f"node-{n:04d}"))
        for n, (profile, mode) in ((n, FLEET_MIX[n % len(FLEET_MIX)]) for n in range(nodes))
    ]
    setup = time.perf_counter() - start
    per_node: dict[str, list[float]] = {profile: [] for profile, _ in FLEET_MIX}
    totals: list[float] = []
    for _ in range(rounds):
        round_start = time.perf_counter()
        for profile, mode, inv in members:
            node_start = time.perf_counter()
            build_slices(inv, k8s_minor=35, generation=1, mig_mode=mode)
            per_node[profile].append((time.perf_counter() - node_start) * 1000)
        totals.append(time.perf_counter() - round_start)
    every = [t for times in per_node.values() for t in times]
    built = [build_slices(inv, k8s_minor=35, generation=2, mig_mode=mode) for _, mode, inv in members]
    stored = copy.deepcopy(built)
    diff = median_ms(lambda: [diff_slices(b, s) for b, s in zip(built, stored, strict=True)], rounds) / nodes
    print(
        f"fleet of {nodes} nodes, Kubernetes 1.35: whole fleet {statistics.median(totals):.2f} s, "
        f"{statistics.median(totals) * 1000 / nodes:.2f} ms/node on average, p99 "
        f"{statistics.quantiles(every, n=100)[98]:.2f} ms/node; unchanged-pool diff {diff:.2f} ms/node "
        f"(inventories built in {setup:.1f} s, not timed)"
    )
    for (profile, mode), times in zip(FLEET_MIX, per_node.values(), strict=True):
        print(f"  {profile} ({mode} MIG): build median {statistics.median(times):.2f} ms/node")


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench slices")
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    big_node(args.rounds)
    fleet(args.nodes, args.rounds)


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
