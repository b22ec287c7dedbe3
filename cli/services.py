"""``gpudra services``: every running service, from ``$SRV.INFO`` — an operator's first check."""

from __future__ import annotations

import argparse
import asyncio

import msgspec

from cli import context
from libs.bus.directory import ServiceInfo, list_services


def add_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    parser = subparsers.add_parser("services", parents=[common], help="list running services (nats.micro $SRV.INFO)")
    parser.add_argument("-o", "--output", choices=("table", "json"), default="table")
    parser.set_defaults(run=run)


def table(services: list[ServiceInfo]) -> str:
    rows = [("NODE", "SERVICE", "VERSION", "PID", "ID", "ENDPOINTS", "METRICS")]
    for info in services:
        endpoints = ",".join(str(endpoint.get("name", "")) for endpoint in info.endpoints) or "-"
        pid, metrics = info.metadata.get("pid", "-"), info.metadata.get("metrics", "-")
        rows.append((info.node, info.name, info.version, pid, info.id, endpoints, metrics))
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    )


async def _run(args: argparse.Namespace) -> int:
    bus = await context.connect(args)
    try:
        services = await list_services(bus.nc)
    finally:
        await bus.close()
    if args.output == "json":
        print(msgspec.json.format(msgspec.json.encode(services)).decode())
    else:
        print(table(services))
    return 0 if services else 1


def run(args: argparse.Namespace) -> int:
    return asyncio.run(_run(args))
