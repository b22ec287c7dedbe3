"""``gpudra claim create|list``: allocated ResourceClaims in the standalone store, as a scheduler would leave them.

Without a cluster there is no scheduler: ``claim create`` stores the claim and its allocation (devices on this
node, the opaque config from ``--config``) in one go, so ``gpudra kubelet prepare NAME`` can prepare it.
``lookup_uid`` is what ``gpudra kubelet`` uses to find a claim's UID by name.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
import yaml

from cli import context, endpoints
from libs.bus import Bus
from libs.kube import RESOURCE_CLAIMS, RESOURCE_SLICES, KubeApi, KubeError, LocalKube, NotFound
from libs.kube.resources import is_dns_label
from services.claim_preparation.configapi import DecodeProblem, decode_parameters

DEFAULT_NODE = "node-0"
DEFAULT_DRIVER = "gpu.gpudra.io"
EXIT_USAGE = 2


class LookupFailed(Exception):
    """A claim the command needs is not in the store; the message says which and how to make it."""


def add_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    claim = subparsers.add_parser("claim", help="ResourceClaims in the standalone store")
    verbs = claim.add_subparsers(dest="verb", required=True)
    create = verbs.add_parser("create", parents=[common], help="store an allocated ResourceClaim")
    create.add_argument("name", help="ResourceClaim name")
    create.add_argument("-n", "--namespace", default="default")
    create.add_argument(
        "--device",
        action="append",
        required=True,
        metavar="[REQUEST:]DEVICE",
        help="allocated device (gpu-3, gpu-0-mig-1g10gb-19-0); repeat for more; REQUEST defaults to gpu or mig",
    )
    create.add_argument("--config", type=Path, help="YAML or JSON file with opaque parameters (GpuConfig...)")
    create.add_argument("--no-check", action="store_true", help="store the config even if it does not decode")
    create.add_argument("--node", default="", help="node the devices are on (default: the system's)")
    create.add_argument("--driver", default="", help="DRA driver name (default: the system's GPU driver)")
    create.add_argument("-o", "--output", choices=("text", "json"), default="text")
    create.set_defaults(run=run)
    listing = verbs.add_parser("list", parents=[common], help="list ResourceClaims")
    listing.add_argument("-n", "--namespace", default="", help="only this namespace (default: all)")
    listing.add_argument("-o", "--output", choices=("table", "json"), default="table")
    listing.set_defaults(run=run)
    delete = verbs.add_parser("delete", parents=[common], help="delete a ResourceClaim")
    delete.add_argument("name", help="ResourceClaim name")
    delete.add_argument("-n", "--namespace", default="default")
    delete.set_defaults(run=run)


# --- building the claim (pure) ----------------------------------------------------------------------------


class UsageError(ValueError):
    pass


def parse_devices(specs: Sequence[str]) -> list[tuple[str, str]]:
    """``[REQUEST:]DEVICE`` -> (request, device); a bare MIG device goes to request ``mig``, a GPU to ``gpu``.

    Both must be DNS labels, as the API server requires of request and device names; the store would keep
    anything, and text that is not UTF-8 (from a non-UTF-8 argv) could not even be written to it."""
    pairs = []
    for spec in specs:
        request, _, device = spec.rpartition(":")
        if not device:
            raise UsageError(f"--device {spec!r}: name a device, e.g. gpu-0 or train:gpu-0")
        request = request or ("mig" if "-mig-" in device else "gpu")
        for what, name in (("request", request), ("device", device)):
            if not is_dns_label(name):
                raise UsageError(f"--device {spec!r}: the {what} name {name!r} must be a DNS label (a-z, 0-9, '-')")
        pairs.append((request, device))
    return pairs


def device_class(device: str) -> str:
    return "mig.gpudra.io" if "-mig-" in device else "gpu.gpudra.io"


def _requests(devices: Sequence[tuple[str, str]]) -> list[dict[str, Any]]:
    by_request: dict[str, list[str]] = {}
    for request, device in devices:
        by_request.setdefault(request, []).append(device)
    requests = []
    for request, names in by_request.items():
        classes = {device_class(name) for name in names}
        if len(classes) > 1:
            raise UsageError(f"request {request} mixes GPUs and MIG devices; give them separate requests")
        exactly = {"deviceClassName": classes.pop(), "allocationMode": "ExactCount", "count": len(names)}
        requests.append({"name": request, "exactly": exactly})
    return requests


def claim_object(name: str, namespace: str, devices: Sequence[tuple[str, str]], config: Any, driver: str) -> Any:
    """The ResourceClaim as a user writes it (spec only)."""
    spec: dict[str, Any] = {"requests": _requests(devices)}
    if config is not None:
        spec["config"] = [{"opaque": {"driver": driver, "parameters": config}}]
    return {
        "apiVersion": RESOURCE_CLAIMS.api_version,
        "kind": RESOURCE_CLAIMS.kind,
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"devices": spec},
    }


def allocation(devices: Sequence[tuple[str, str]], config: Any, node: str, driver: str) -> dict[str, Any]:
    """``status.allocation`` as the scheduler writes it: results in the node's pool, config from the claim."""
    allocated: dict[str, Any] = {
        "results": [{"request": r, "driver": driver, "pool": node, "device": d} for r, d in devices]
    }
    if config is not None:
        allocated["config"] = [{"source": "FromClaim", "opaque": {"driver": driver, "parameters": config}}]
    selector = {"nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}]}
    return {"devices": allocated, "nodeSelector": selector}


def read_config(path: Path | None, check: bool) -> Any:
    """The opaque parameters in ``path`` (YAML or JSON), decoded as the driver will decode them unless told not to."""
    if path is None:
        return None
    try:
        config = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise UsageError(f"--config {path}: {exc}") from None
    except RecursionError:  # PyYAML constructs recursively: about a thousand nested lists exhaust the stack
        raise UsageError(f"--config {path}: lists or mappings are nested too deeply") from None
    if check:
        try:
            decode_parameters(config)
        except DecodeProblem as exc:
            raise UsageError(f"--config {path}: {exc} (--no-check stores it anyway)") from None
    return config


def devices_of(claim: dict[str, Any]) -> list[str]:
    allocation_ = (claim.get("status") or {}).get("allocation") or {}
    return [str(result.get("device")) for result in (allocation_.get("devices") or {}).get("results") or []]


def table(claims: Sequence[dict[str, Any]]) -> str:
    rows = [("NAMESPACE", "NAME", "UID", "DEVICES")]
    for claim in claims:
        meta = claim["metadata"]
        rows.append((meta.get("namespace", ""), meta["name"], meta.get("uid", ""), ",".join(devices_of(claim)) or "-"))
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows)


# --- talking to the store ---------------------------------------------------------------------------------


def _system_defaults(args: argparse.Namespace) -> tuple[str, str]:
    """(node, driver): flags first, else the running system's, else the standalone defaults."""
    try:
        system = endpoints.read(args.state_dir)
        node, driver = system.node, system.drivers.get("gpu", DEFAULT_DRIVER)
    except endpoints.NotRunning:
        node, driver = DEFAULT_NODE, DEFAULT_DRIVER
    return args.node or node, args.driver or driver


async def _with_store(args: argparse.Namespace) -> tuple[Bus, KubeApi]:
    bus = await context.connect(args)
    try:
        return bus, await LocalKube.open(bus.js)
    except KubeError:
        await bus.close()
        raise


async def published_devices(kube: KubeApi, node: str, driver: str) -> set[str]:
    """The devices ``node`` publishes for ``driver`` in its ResourceSlices: all the scheduler could allocate."""
    slices = await kube.list(RESOURCE_SLICES, fields={"spec.nodeName": node, "spec.driver": driver})
    return {device["name"] for item in slices.items for device in item["spec"].get("devices", [])}


def unpublished_problem(wanted: Sequence[str], published: set[str], node: str, driver: str) -> str | None:
    """Why an allocation of ``wanted`` could not have come from the scheduler, or None."""
    if not published:
        return f"node {node} publishes no {driver} devices (is discovery running on it?)"
    missing = [device for device in wanted if device not in published]
    if not missing:
        return None
    return f"node {node} publishes no device {', '.join(missing)}; it has {', '.join(sorted(published))}"


async def create_claim(kube: KubeApi, args: argparse.Namespace) -> dict[str, Any]:
    devices = parse_devices(args.device)
    config = read_config(args.config, check=not args.no_check)
    node, driver = _system_defaults(args)
    problem = unpublished_problem(
        [device for _, device in devices], await published_devices(kube, node, driver), node, driver
    )
    if problem:
        raise UsageError(problem)
    created = await kube.create(RESOURCE_CLAIMS, claim_object(args.name, args.namespace, devices, config, driver))
    created["status"] = {"allocation": allocation(devices, config, node, driver)}
    stored: dict[str, Any] = await kube.update_status(RESOURCE_CLAIMS, created)
    return stored


def can_look_up(args: argparse.Namespace) -> bool:
    """Whether a store can be reached: a NATS URL was given, or a standalone system runs in the state dir."""
    return bool(args.nats_url) or (Path(args.state_dir) / endpoints.FILENAME).is_file()


async def lookup_uid(args: argparse.Namespace, namespace: str, name: str) -> str:
    """The UID of the claim ``namespace/name`` in the standalone store (for ``gpudra kubelet prepare NAME``)."""
    bus, kube = await _with_store(args)
    try:
        claim = await kube.get(RESOURCE_CLAIMS, name, namespace)
    except NotFound:
        raise LookupFailed(
            f"no ResourceClaim {namespace}/{name} in the standalone store; create one with "
            f"`gpudra claim create {name} --device gpu-0`, or pass --uid"
        ) from None
    finally:
        await bus.close()
    return str(claim["metadata"]["uid"])


async def delete_claim(kube: KubeApi, args: argparse.Namespace) -> int:
    try:
        await kube.delete(RESOURCE_CLAIMS, args.name, args.namespace)
    except NotFound:
        raise UsageError(f"no ResourceClaim {args.namespace}/{args.name} in the standalone store") from None
    print(f"resourceclaim {args.namespace}/{args.name} deleted")
    return 0


def _print_json(value: object) -> None:
    print(msgspec.json.format(msgspec.json.encode(value)).decode(), flush=True)


async def _run(args: argparse.Namespace) -> int:
    bus, kube = await _with_store(args)
    try:
        if args.verb == "create":
            claim = await create_claim(kube, args)
            if args.output == "json":
                _print_json(claim)
            else:
                meta = claim["metadata"]
                print(
                    f"resourceclaim {meta['namespace']}/{meta['name']} created (uid {meta['uid']}), allocated "
                    f"{', '.join(devices_of(claim))}"
                )
            return 0
        if args.verb == "delete":
            return await delete_claim(kube, args)
        claims = (await kube.list(RESOURCE_CLAIMS, args.namespace or None)).items
        if args.output == "json":
            _print_json(claims)
        else:
            print(table(claims))
        return 0
    finally:
        await bus.close()


def run(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_run(args))
    except UsageError as exc:
        print(f"gpudra claim {args.verb}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KubeError as exc:
        print(f"gpudra claim {args.verb}: {exc}", file=sys.stderr)
        return 1
