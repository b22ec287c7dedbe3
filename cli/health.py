"""``gpudra health``: the remediation controller as an operator sees it.

- ``status``: every node and device with its state and reason, and the circuit breaker (read from KV);
- ``breaker reset``: close the tripped breaker (the faults it held go through admission again);
- ``reset --node N [--device D]``: put a device or node back in service by hand (after a repair, or to stop
  a remediation).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import getpass
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

import msgspec

from cli import context, endpoints
from libs.events import CLUSTER
from libs.events.catalogue import ResetBreaker, ResetBreakerReply, ResetRemediation, ResetRemediationReply

if TYPE_CHECKING:  # the rules pull in the catalogue and more: imported when the command runs
    from services.health.controller.history import PastRemediation
    from services.health.controller.status import Status

HEALTHY = "healthy"


def add_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    parser = subparsers.add_parser("health", help="GPU remediation: status, breaker, resets")
    commands = parser.add_subparsers(dest="health_command", required=True, metavar="COMMAND")
    status = commands.add_parser("status", parents=[common], help="nodes and devices with state and reason")
    status.add_argument("-o", "--output", choices=("table", "json"), default="table")
    status.add_argument("--node", default="", help="one node (default: every node with a remediation record)")
    status.add_argument(
        "--history", type=float, default=24.0, metavar="HOURS", help="remediations of the last HOURS (0: none)"
    )
    status.set_defaults(run=run_status)
    breaker = commands.add_parser("breaker", help="the quarantine circuit breaker")
    breaker_commands = breaker.add_subparsers(dest="breaker_command", required=True, metavar="COMMAND")
    reset_breaker = breaker_commands.add_parser("reset", parents=[common], help="close the breaker")
    reset_breaker.add_argument("--by", default="", help="who resets it (default: your user name)")
    reset_breaker.set_defaults(run=run_breaker_reset)
    reset = commands.add_parser("reset", parents=[common], help="put a device or node back in service by hand")
    reset.add_argument("--node", default="", help="node name (default: the standalone system's)")
    reset.add_argument("--device", default="", help="device name (default: the node itself)")
    reset.add_argument("--note", default="", help="why (kept in the events)")
    reset.add_argument("--by", default="", help="who (default: your user name)")
    reset.set_defaults(run=run_reset)


def table(status: Status) -> str:
    breaker = status.breaker
    lines = [f"# circuit breaker {breaker.state}: {breaker.quarantined_nodes} nodes in the window"]
    if breaker.reason:
        lines[0] += f" ({breaker.reason})"
    rows = [("NODE", "ENTITY", "STATE", "ATTEMPT", "SINCE", "REASON")]
    for node in status.nodes:
        for entity in node.entities:
            if entity.entity == "node" or entity.state != HEALTHY or entity.faults:
                since = entity.since.strftime("%Y-%m-%dT%H:%M:%SZ") if entity.since else "-"
                attempt = str(entity.attempt) if entity.attempt else "-"
                rows.append(
                    (node.node, entity.entity, entity.state, attempt, since, _reason(entity.reason, entity.faults))
                )
        if node.held:
            rows.append((node.node, "-", "held", "-", "-", "breaker open: " + ", ".join(node.held)))
    lines += _aligned(rows)
    if status.recent:
        lines += ["", f"# recent remediations ({len(status.recent)})"]
        lines += _aligned(
            [("NODE", "ENTITY", "FAULT", "STARTED", "TOOK", "OUTCOME", "STEPS"), *map(_past, status.recent)]
        )
    return "\n".join(lines)


def _aligned(rows: Sequence[tuple[str, ...]]) -> list[str]:
    """Columns padded to their widest cell; the last one (free text) is not."""
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]) - 1)]
    return [
        "  ".join([*(cell.ljust(width) for cell, width in zip(row, widths, strict=False)), row[-1]]).rstrip()
        for row in rows
    ]


def _duration(seconds: float) -> str:
    return f"{seconds * 1000:.0f}ms" if seconds < 1 else f"{seconds:.1f}s"


def _past(done: PastRemediation) -> tuple[str, ...]:
    took = _duration((done.ended - done.started).total_seconds()) if done.ended else "-"
    steps = ", ".join(f"{s.step} {s.outcome} {_duration(s.duration_ms / 1000)}" for s in done.steps) or "-"
    started = done.started.strftime("%Y-%m-%dT%H:%M:%SZ")
    return (done.node, done.entity, done.fault or "-", started, took, done.outcome or "in progress", steps)


def _reason(reason: str, faults: list[str]) -> str:
    if faults and not reason:
        return "recorded: " + ", ".join(faults)
    return reason or "-"


def user(args: argparse.Namespace) -> str:
    return str(args.by) if args.by else getpass.getuser()


async def _status(args: argparse.Namespace) -> int:
    from services.health.controller.status import UnknownNode, read_status

    bus = await context.connect(args)
    try:
        history = dt.timedelta(hours=args.history) if args.history > 0 else None
        status = await read_status(bus, args.node or None, history)
    except UnknownNode as exc:
        print(f"gpudra: {exc}", file=sys.stderr)
        return 1
    finally:
        await bus.close()
    if args.output == "json":
        print(msgspec.json.format(msgspec.json.encode(status)).decode())
    else:
        print(table(status))
    return 0


async def _breaker_reset(args: argparse.Namespace) -> int:
    bus = await context.connect(args)
    try:
        reply = await bus.request(CLUSTER, ResetBreaker(by=user(args)), ResetBreakerReply, timeout=30.0)
    finally:
        await bus.close()
    print(f"circuit breaker {reply.state}; {reply.released} held fault(s) handed back for admission")
    if reply.state != "closed":
        print(f"it tripped again at once: {reply.reason}", file=sys.stderr)
        return 1
    return 0


async def _reset(args: argparse.Namespace) -> int:
    node = args.node or (None if args.nats_url else endpoints.read(args.state_dir).node)
    if node is None:
        raise endpoints.NotRunning("give --node: with --nats-url there is no standalone system to default to")
    command = ResetRemediation(node=node, device=args.device, by=user(args), note=args.note)
    bus = await context.connect(args)
    try:
        reply = await bus.request(CLUSTER, command, ResetRemediationReply, timeout=30.0)
    finally:
        await bus.close()
    print(f"node {reply.node}{' ' + reply.device if reply.device else ''}: {reply.state}")
    return 0


def run_status(args: argparse.Namespace) -> int:
    return asyncio.run(_status(args))


def run_breaker_reset(args: argparse.Namespace) -> int:
    return asyncio.run(_breaker_reset(args))


def run_reset(args: argparse.Namespace) -> int:
    return asyncio.run(_reset(args))
