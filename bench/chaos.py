"""The chaos soak, long form: ``gpudra up`` (a simulated ``mixed-mig`` node, dynamic MIG) goes through
``--cycles`` prepare/unprepare cycles over eight claims and ``--faults`` injected XIDs while every service and the
nats-server are SIGKILLed in turn, one every ``--between`` cycles. Afterwards the audit of
``tests/chaos/chaos_support.py``: no leaked CDI spec or MIG device, the checkpoint equal to what the kubelet
believes, every claim event there, every health event decided once (or dead-lettered), every service ready.

It prints what the run went through (kills per process, calls asked again and why, the median call) and how long
the system took to be ready after the last kill; the short form of the same soak is in the test suite.

    python -m bench chaos [--cycles 2000] [--faults 200] [--between 20 60] [--seed 1]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
from pathlib import Path

from tests.chaos.chaos_support import SoakPlan, SoakReport, running_system


async def _soak(plan: SoakPlan, root: Path) -> SoakReport:
    async with running_system(root) as soak:
        return await soak.run(plan)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench chaos", description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=2000)
    parser.add_argument("--faults", type=int, default=200)
    parser.add_argument("--between", type=int, nargs=2, default=(20, 60), metavar=("LEAST", "MOST"))
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    plan = SoakPlan(cycles=args.cycles, faults=args.faults, cycles_between_kills=tuple(args.between), seed=args.seed)
    with tempfile.TemporaryDirectory(prefix="gpudra-chaos-") as directory:
        report = asyncio.run(_soak(plan, Path(directory)))
    latencies = sorted(report.latencies_ms)
    p99 = latencies[int(0.99 * (len(latencies) - 1))] if latencies else 0.0
    print(report.summary())
    print(f"calls: p50 {statistics.median(latencies) if latencies else 0.0:.1f} ms, p99 {p99:.1f} ms (with retries)")
    for problem in report.problems:
        print(f"problem: {problem}")
    print("audit:", "passed" if not report.problems else f"{len(report.problems)} problems")
