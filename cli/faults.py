"""``gpudra faults inject``: make a simulated GPU fail as real hardware would (the node's discovery serves
``InjectFault`` for its simulated backend; a node on NVML refuses).

The fault then takes the real path: the node's monitors see it, publish a health event, and the remediation
controller quarantines, drains, repairs and returns the GPU (follow it with ``gpudra health status`` or
``gpudra events tail``).
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable

from cli import context, endpoints
from libs.events.catalogue import InjectFault, InjectFaultReply
from libs.events.subjects import node_token
from libs.kube.resources import is_dns_label

KINDS = ("xid", "ecc-single", "ecc-double", "gpu-lost", "gpu-back", "nvlink-down", "thermal")


def add_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    parser = subparsers.add_parser("faults", help="inject simulated GPU faults")
    commands = parser.add_subparsers(dest="faults_command", required=True, metavar="COMMAND")
    inject = commands.add_parser(
        "inject",
        parents=[common],
        help="make a simulated GPU report a fault",
        description="e.g. gpudra faults inject --gpu 3 --xid 79 (GPU fallen off the bus: the node is rebooted)",
    )
    inject.add_argument("--node", type=node_arg, default="", help="node name (default: the standalone system's)")
    inject.add_argument(
        "--gpu", type=gpu_arg, required=True, help="GPU minor or device name (3, gpu-3; a MIG device for --xid)"
    )
    what = inject.add_mutually_exclusive_group(required=True)
    what.add_argument("--xid", type=at_least(0), help="an XID error (48: double-bit ECC, 79: fallen off the bus, ...)")
    what.add_argument("--kind", choices=KINDS[1:], help="another kind of fault (gpu-back brings a lost GPU back)")
    inject.add_argument("--count", type=at_least(1), default=1, help="errors to count (ECC faults)")
    inject.set_defaults(run=run)


# Argument types: a bad value is argparse's usage error (exit 2) naming the option, never a traceback later
# (a node name that cannot be a subject token, text that is not UTF-8 and cannot be sent, a negative count).


def node_arg(text: str) -> str:
    """A node name that can be a subject token; empty means the standalone system's."""
    if text:
        try:
            node_token(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def gpu_arg(text: str) -> str:
    """A minor or a device name; device names are DNS labels (ResourceSlices publish no others)."""
    if not is_dns_label(device_name(text)):
        raise argparse.ArgumentTypeError(f"{text!r} is neither a GPU minor nor a device name (3, gpu-3, gpu-0-mig-…)")
    return text


def at_least(least: int) -> Callable[[str], int]:
    """An argument type: a decimal number, at least ``least``."""

    def number(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"must be at least {least}, not {value}")
        return value

    return number


def device_name(gpu: str) -> str:
    """``3`` → ``gpu-3``; names pass unchanged."""
    return f"gpu-{gpu}" if gpu.isdigit() else gpu


def command_of(args: argparse.Namespace) -> InjectFault:
    if args.xid is not None:
        return InjectFault(device=device_name(args.gpu), kind="xid", xid=args.xid)
    return InjectFault(device=device_name(args.gpu), kind=args.kind, count=args.count)


def target_node(args: argparse.Namespace) -> str:
    if args.node:
        return str(args.node)
    if args.nats_url:
        raise endpoints.NotRunning("give --node: with --nats-url there is no standalone system to default to")
    return endpoints.read(args.state_dir).node


async def _run(args: argparse.Namespace) -> int:
    node, command = target_node(args), command_of(args)
    bus = await context.connect(args)
    try:
        reply = await bus.request(node, command, InjectFaultReply, timeout=10.0)
    finally:
        await bus.close()
    what = f"XID {command.xid}" if command.kind == "xid" else command.kind
    print(f"injected {what} on node {node}, {reply.device}")
    print("follow the remediation with `gpudra health status` (or `gpudra events tail`)")
    return 0


def run(args: argparse.Namespace) -> int:
    return asyncio.run(_run(args))
