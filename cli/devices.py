"""``gpudra devices``: the node's GPU inventory as discovery stored it (the ``gpudra_inventory`` KV bucket).

Read from the bucket rather than from the hardware, so it shows what every service works with, and works
from any machine that reaches the bus.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import TYPE_CHECKING

import msgspec
from nats.js.errors import KeyNotFoundError, NoKeysError

from cli import context, endpoints
from libs.bus import Bus
from libs.bus.topology import INVENTORY_BUCKET
from libs.events import node_token

if TYPE_CHECKING:  # the device model pulls in both backends: imported when the command runs, not at every start
    from libs.devices.model import Gpu, Inventory, MigDevice

GIB = 1024**3


class Bookkeeping(msgspec.Struct, frozen=True):
    """What discovery stores beside the ``Inventory`` fields."""

    generation: int = 0
    reason: str = ""


def add_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    parser = subparsers.add_parser("devices", parents=[common], help="the node's GPUs and MIG devices (inventory)")
    parser.add_argument("-o", "--output", choices=("table", "json"), default="table")
    add_node_option(parser)
    parser.set_defaults(run=run)


def add_node_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--node", default="", help="node name (default: the standalone system's; with --nats-url: every node)"
    )


def selected_node(args: argparse.Namespace) -> str | None:
    """``--node``, else the running standalone system's node; None (every node) with only ``--nats-url``."""
    if args.node:
        return str(args.node)
    if args.nats_url:
        return None
    return endpoints.read(args.state_dir).node


def _size(memory_bytes: int) -> str:
    return f"{memory_bytes / GIB:.0f}Gi"


def gpu_row(node: str, gpu: Gpu) -> tuple[str, ...]:
    numa = "-" if gpu.numa_node is None else str(gpu.numa_node)
    mig = "on" if gpu.mig_enabled else "off"
    return (node, gpu.name, "gpu", gpu.product_name, _size(gpu.memory_bytes), gpu.pci_bus_id, numa, mig, gpu.uuid)


def mig_row(node: str, mig: MigDevice) -> tuple[str, ...]:
    where = f"gpu-{mig.parent_minor} slices {mig.placement.start}-{mig.placement.end - 1}"
    profile = mig.profile
    return (node, mig.name, "mig", profile.name, _size(profile.memory_bytes), where, "-", "-", mig.uuid)


def table(inventories: list[tuple[Inventory, Bookkeeping]]) -> str:
    """One header line per node (driver, generation), then one row per device."""
    lines = []
    rows: list[tuple[str, ...]] = [
        ("NODE", "DEVICE", "TYPE", "MODEL/PROFILE", "MEMORY", "PCI BUS/PLACEMENT", "NUMA", "MIG", "UUID")
    ]
    for inventory, book in inventories:
        lines.append(
            f"# node {inventory.node}: {len(inventory.gpus)} GPUs, {len(inventory.mig_devices)} MIG devices, "
            f"driver {inventory.driver_version}, CUDA {inventory.cuda_driver_version}, backend {inventory.backend}, "
            f"generation {book.generation} ({book.reason or 'unknown'})"
        )
        for gpu in inventory.gpus:
            rows.append(gpu_row(inventory.node, gpu))
            rows.extend(mig_row(inventory.node, mig) for mig in inventory.mig_devices_of(gpu))
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    lines.extend("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows)
    return "\n".join(lines)


async def read_entries(bus: Bus, node: str | None) -> list[bytes]:
    """The stored JSON of one node's entry, or of every node's; empty when there is none."""
    kv = await bus.kv(INVENTORY_BUCKET)
    try:
        keys = [node_token(node)] if node else sorted(await kv.keys())
    except NoKeysError:
        return []
    values = []
    for key in keys:
        try:
            values.append((await kv.get(key)).value or b"")
        except KeyNotFoundError:
            continue
    return values


async def _run(args: argparse.Namespace) -> int:
    node = selected_node(args)
    bus = await context.connect(args)
    try:
        values = await read_entries(bus, node)
    finally:
        await bus.close()
    if not values:
        where = f"node {node}" if node else "any node"
        print(
            f"gpudra: no inventory for {where} in {INVENTORY_BUCKET}; is discovery running? (gpudra services)",
            file=sys.stderr,
        )
        return 1
    if args.output == "json":
        documents = [msgspec.json.decode(value) for value in values]
        print(msgspec.json.format(msgspec.json.encode(documents)).decode())
        return 0
    print(table(decoded(values)))
    return 0


def decoded(values: list[bytes]) -> list[tuple[Inventory, Bookkeeping]]:
    from libs.devices.model import Inventory

    return [(msgspec.json.decode(v, type=Inventory), msgspec.json.decode(v, type=Bookkeeping)) for v in values]


def run(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_run(args))
    except msgspec.DecodeError as exc:
        print(f"gpudra: unreadable inventory entry: {exc}", file=sys.stderr)
        return 1
