"""``gpudra kubelet prepare|unprepare|health``: do what the kubelet does, against the standalone system.

Registration, version choice, the 45 s deadline and the check that the answer covers exactly the asked
claims are the kubelet's own (``libs.kubeletclient``), so what works here works for a real node. As the kubelet
does, a claim goes to the driver its allocation names: a channel claim (``gpudra claim create --domain``) to
``compute-domain.gpudra.io``, a GPU claim to the GPU driver, unless ``--driver`` says otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgspec

from cli import claims, endpoints
from libs.kubeletclient import (
    DEFAULT_CALL_TIMEOUT,
    ClaimRef,
    DeviceHealth,
    KubeletClient,
    KubeletClientError,
    PrepareResult,
    UnprepareResult,
)
from services.kubelet_shim.sockets import fits

EXIT_USAGE = 2


def add_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    kubelet = subparsers.add_parser("kubelet", help="act as the kubelet towards the DRA driver")
    verbs = kubelet.add_subparsers(dest="verb", required=True)
    target = argparse.ArgumentParser(add_help=False)
    target.add_argument(
        "--driver",
        default="",
        help="DRA driver name (default: the one the claim's allocation names, else the system's GPU driver)",
    )
    target.add_argument("--registry-dir", default="", help="plugins_registry directory (default: the system's)")
    target.add_argument("--node", default="", help="whose kubelet to act as (default: the system's first node)")
    target.add_argument("--api", choices=("v1", "v1beta1"), help="speak only this DRA version")
    target.add_argument("-o", "--output", choices=("text", "json"), default="text")
    for verb, text in (("prepare", "NodePrepareResources"), ("unprepare", "NodeUnprepareResources")):
        parser = verbs.add_parser(verb, parents=[common, target], help=f"call {text} for one claim")
        parser.add_argument("name", help="ResourceClaim name")
        parser.add_argument("-n", "--namespace", default="default")
        parser.add_argument("--uid", default="", help="ResourceClaim UID (default: looked up in the standalone store)")
        parser.add_argument("--timeout", type=float, default=DEFAULT_CALL_TIMEOUT, help="call deadline (45 s)")
        parser.set_defaults(run=run)
    health = verbs.add_parser("health", parents=[common, target], help="show the driver's device health stream")
    health.add_argument("--follow", action="store_true", help="keep printing the list whenever it changes")
    health.set_defaults(run=run)


class AmbiguousDriver(ValueError):
    """The claim's allocation names several drivers: the kubelet would call each; this command calls one."""


def claim_driver(claim: dict[str, Any]) -> str:
    """The driver the kubelet would call for ``claim``: the one its allocation results name ("" when it is not
    allocated, so the caller's default applies); ``AmbiguousDriver`` when they name several."""
    drivers = claims.drivers_of(claim)
    if len(drivers) > 1:
        raise AmbiguousDriver(f"its allocation names drivers {', '.join(drivers)}: pass --driver to pick one")
    return drivers[0] if drivers else ""


def _target(args: argparse.Namespace, allocated_driver: str = "") -> tuple[str, str]:
    """Registry directory and driver name: flags first, then the driver the claim's allocation names, else the
    running system's endpoints file (the registry of ``--node``: each simulated node has its own kubelet
    sockets, the GPU driver's and the compute-domain driver's side by side)."""
    driver = args.driver or allocated_driver
    if args.registry_dir and driver:
        return str(args.registry_dir), str(driver)
    system = endpoints.read(args.state_dir)
    registry_dir = args.registry_dir or system.on(args.node).kubelet.registration_dir
    return registry_dir, driver or system.drivers["gpu"]


@contextmanager
def reachable(registry_dir: str, driver: str) -> Iterator[str]:
    """The registry directory under a name that keeps its sockets within a unix socket address.

    A deep state directory can make ``<dir>/<driver>-reg.sock`` longer than the 107 bytes a socket address
    holds; the shim then binds it through the directory, and so do we: ``/proc/self/fd/<dir fd>``.
    """
    if fits(Path(registry_dir) / f"{driver}-reg.sock"):
        yield registry_dir
        return
    fd = os.open(registry_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{fd}"
    finally:
        os.close(fd)


def format_prepared(claim: ClaimRef, result: PrepareResult) -> str:
    head = f"{claim.namespace}/{claim.name} (uid {claim.uid})"
    if result.error:
        return f"{head}: FAILED\n  {result.error}"
    lines = [f"{head}: prepared, {len(result.devices)} device(s)"]
    for device in result.devices:
        share = f" share {device.share_id}" if device.share_id else ""
        requests = ",".join(device.request_names) or "*"
        lines.append(f"  {device.pool_name}/{device.device_name} requests {requests}{share}")
        lines.extend(f"    {cdi_id}" for cdi_id in device.cdi_device_ids)
    return "\n".join(lines)


def format_unprepared(claim: ClaimRef, result: UnprepareResult) -> str:
    head = f"{claim.namespace}/{claim.name} (uid {claim.uid})"
    return f"{head}: FAILED\n  {result.error}" if result.error else f"{head}: unprepared"


def format_health(devices: list[DeviceHealth]) -> str:
    if not devices:
        return "(no devices)"
    return "\n".join(
        f"{d.pool_name}/{d.device_name}  {d.health.value}" + (f"  {d.message}" if d.message else "") for d in devices
    )


def _print_json(value: object) -> None:
    print(msgspec.json.format(msgspec.json.encode(value)).decode(), flush=True)


async def _claim_call(args: argparse.Namespace, client: KubeletClient, uid: str) -> int:
    claim = ClaimRef(namespace=args.namespace, name=args.name, uid=uid)
    results: Mapping[str, PrepareResult | UnprepareResult]
    if args.verb == "prepare":
        prepared = await client.prepare([claim])
        results = prepared
        text = format_prepared(claim, prepared[claim.uid])
    else:
        unprepared = await client.unprepare([claim])
        results = unprepared
        text = format_unprepared(claim, unprepared[claim.uid])
    if args.output == "json":
        _print_json(results)
    else:
        print(text, flush=True)
    return 1 if results[claim.uid].error else 0


async def _health(args: argparse.Namespace, client: KubeletClient) -> int:
    last: list[DeviceHealth] | None = None
    async for devices in client.watch_health():
        if devices != last:
            if args.output == "json":
                _print_json(devices)
            else:
                print(format_health(devices), flush=True)
            last = devices
        if not args.follow:
            break
    return 0


async def _run(args: argparse.Namespace) -> int:
    uid = args.uid if args.verb != "health" else ""
    allocated_driver = ""
    if args.verb != "health" and not uid:
        stored = await claims.lookup_claim(args, args.namespace, args.name)
        uid = str(stored["metadata"]["uid"])
        if not args.driver:
            allocated_driver = claim_driver(stored)
    registry_dir, driver = _target(args, allocated_driver)
    timeout = getattr(args, "timeout", DEFAULT_CALL_TIMEOUT)
    with reachable(registry_dir, driver) as directory:
        client = await KubeletClient.discover(directory, driver, force_version=args.api, call_timeout=timeout)
    async with client:
        return await (_health(args, client) if args.verb == "health" else _claim_call(args, client, uid))


def run(args: argparse.Namespace) -> int:
    if args.verb != "health" and not args.uid and not claims.can_look_up(args):
        print(
            "gpudra: pass --uid (the claim's metadata.uid), or start gpudra (`gpudra up`) to find the claim by name",
            file=sys.stderr,
        )
        return EXIT_USAGE
    try:
        return asyncio.run(_run(args))
    except (KubeletClientError, claims.LookupFailed) as exc:
        print(f"gpudra: {exc}", file=sys.stderr)
        return 1
    except AmbiguousDriver as exc:
        print(f"gpudra: ResourceClaim {args.namespace}/{args.name}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
