"""``gpudra slices``: the ResourceSlices discovery published, read back from the standalone Kubernetes store.

Printed as a ``v1`` ``List`` (what ``kubectl get -o yaml`` prints), so the output can be compared with a
cluster's or applied to one as it is.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

import msgspec
import yaml

from cli import context
from cli.devices import add_node_option, selected_node
from cli.up import GPU_DRIVER as DRIVER_NAME


def add_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    parser = subparsers.add_parser("slices", parents=[common], help="the node's ResourceSlices (standalone store)")
    parser.add_argument("-o", "--output", choices=("yaml", "json"), default="yaml")
    parser.add_argument("--driver", default=DRIVER_NAME, help=f"DRA driver (default {DRIVER_NAME})")
    add_node_option(parser)
    parser.set_defaults(run=run)


def as_list(items: list[dict[str, Any]], resource_version: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": resource_version}, "items": items}


def render(document: dict[str, Any], output: str) -> str:
    if output == "json":
        return msgspec.json.format(msgspec.json.encode(document)).decode()
    return yaml.safe_dump(document, sort_keys=False, default_flow_style=False).rstrip()


async def _run(args: argparse.Namespace) -> int:
    from libs.kube import RESOURCE_SLICES, LocalKube  # kubernetes-asyncio: half a second, only when needed

    node = selected_node(args)
    fields = {"spec.driver": str(args.driver), **({"spec.nodeName": node} if node else {})}
    bus = await context.connect(args)
    try:
        store = await LocalKube.open(bus.js)
        listed = await store.list(RESOURCE_SLICES, fields=fields)
    finally:
        await bus.close()
    print(render(as_list(listed.items, listed.resource_version), args.output))
    if not listed.items:
        where = f"node {node}" if node else "any node"
        print(
            f"gpudra: no ResourceSlices of {args.driver} for {where}; is discovery running? (gpudra services)",
            file=sys.stderr,
        )
        return 1
    return 0


def run(args: argparse.Namespace) -> int:
    from libs.kube import KubeError

    try:
        return asyncio.run(_run(args))
    except KubeError as exc:
        print(f"gpudra: {exc}", file=sys.stderr)
        return 1
