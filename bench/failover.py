"""Failover of a three-server JetStream cluster, measured: SIGKILL of the server that leads the claim and health
streams (and the controller's durable, and claim_preparation's connection) while prepares run and a fault
burst is published. Each round is the one ``tests/cluster/test_cluster_failover.py`` audits
(``tests/cluster/failover_support.py``), with the leaders watched from a surviving server.

Per round it prints: the seconds until each stream, consumer and bucket the victim led had a new leader; what
the clients went through (monitor publishes refused, kubelet calls that had to be asked again, claim events
the outbox kept and sent again, replies refused); prepare latency before, during and after the outage; the
seconds until the last verdict; and the audit (every claim event and verdict stored once and delivered, every
health event one verdict or a dead letter). Then medians over the rounds.

    python -m bench failover [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
from pathlib import Path

from libs.natsserver import start_cluster
from libs.trust.authority import Authority
from tests.cluster.failover_support import Issuer, Round, RoundResult, median, percentile, running_system


def _describe(index: int, result: RoundResult) -> str:
    audit = result.audit
    leaders = ", ".join(f"{name} {seconds:.1f}s" for name, seconds in sorted(result.leader_seconds.items()))
    latency = ", ".join(
        f"{window} p50 {median(result.latency_ms('prepare', window)):.0f} / "
        f"p99 {percentile(result.latency_ms('prepare', window), 0.99):.0f} ms"
        for window in ("before", "during", "after")
    )
    return "\n".join(
        (
            f"round {index}: killed {result.victim}; new leaders after: {leaders}",
            f"  clients: {result.monitor_publish_errors} monitor publishes refused and sent again, "
            f"{result.request_errors} kubelet calls asked again ({result.requests_timed_out} timed out), "
            f"service errors {result.service_errors}",
            f"  prepare latency: {latency}",
            f"  {audit.claim_events_stored} claim events stored, {audit.claim_events_delivered} delivered; "
            f"{audit.verdicts} verdicts + {audit.health_dead_lettered} dead letters for {audit.health_events} "
            f"health events; last verdict {audit.last_verdict_seconds:.1f}s after the kill; "
            f"{result.duplicates_dropped:.0f} repeats dropped by JetStream's de-duplication; "
            f"stored twice {audit.stored_twice}",
            f"  victim restarted in {result.restart_seconds:.1f}s, caught up in {result.catch_up_seconds:.1f}s; "
            f"problems: {audit.problems or 'none'}",
        )
    )


async def _rounds(count: int, root: Path) -> list[RoundResult]:
    authority = Authority.open(root / "trust")
    servers = await start_cluster(root / "cluster", size=3, auth=authority)
    results: list[RoundResult] = []
    try:
        issuer = Issuer(authority, root / "trust" / "users", ",".join(server.url for server in servers))
        async with running_system(servers, issuer, root / "system") as system:
            for index in range(count):
                result = await Round(system, index, kill_consumer_leader=True, measure_leaders=True).run()
                print(_describe(index, result), flush=True)
                results.append(result)
    finally:
        for server in servers:
            await server.stop()
    return results


def _summary(results: list[RoundResult]) -> str:
    names = sorted({name for r in results for name in r.leader_seconds})
    leaders = ", ".join(
        f"{name} {statistics.median(r.leader_seconds[name] for r in results if name in r.leader_seconds):.1f}s"
        for name in names
    )
    problems = sum(len(r.audit.problems) for r in results)
    during = [ms for r in results for ms in r.latency_ms("prepare", "during")]
    before = [ms for r in results for ms in r.latency_ms("prepare", "before")]
    return (
        f"medians over {len(results)} rounds: new leader after {leaders}; "
        f"monitor publishes refused {statistics.median(r.monitor_publish_errors for r in results):.0f}, "
        f"kubelet calls asked again {statistics.median(r.request_errors for r in results):.0f}; "
        f"prepare p50 before {median(before):.0f} ms, during the outage {median(during):.0f} ms; "
        f"last verdict {statistics.median(r.audit.last_verdict_seconds for r in results):.1f}s after the kill; "
        f"problems {problems}"
    )


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench failover", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="gpudra-failover-") as directory:
        results = asyncio.run(_rounds(args.rounds, Path(directory)))
    print(_summary(results))
