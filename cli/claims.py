"""``gpudra claim create|list``: allocated ResourceClaims in the standalone store, as a scheduler would leave them.

Without a cluster there is no scheduler: ``claim create`` stores the claim and its allocation (devices on this
node, the opaque config from ``--config``) in one go, so ``gpudra kubelet prepare NAME`` can prepare it.
``claim create --domain`` makes a channel claim of a ComputeDomain instead (``cli.domains``): the claim its
template would give a pod, allocated to a free channel slot of the node. ``lookup_claim`` is what
``gpudra kubelet`` uses to find a claim's UID (and its driver) by name.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import msgspec
import yaml

from cli import context, endpoints
from cli.shares import AllocationRefused, allocate, parse_capacity_requests
from libs.bus import Bus
from libs.claims.allocation import pinned_to
from libs.claims.configapi import DecodeProblem, decode_parameters
from libs.kube import RESOURCE_CLAIMS, RESOURCE_SLICES, KubeApi, KubeError, LocalKube, NotFound
from libs.kube.resources import custom_resource, is_dns_label
from libs.slices.capacity import rendered
from services.compute_domain.api import DRIVER as CHANNEL_DRIVER
from services.compute_domain.api import GROUP, KIND, VERSION, ApiObjectError, ComputeDomain, decode_domain
from services.compute_domain.controller.render import workload_claim_template
from services.compute_domain.node.channels import SLOT_PREFIX

DEFAULT_NODE = "node-0"
DEFAULT_DRIVER = "gpu.gpudra.io"
EXIT_USAGE = 2
COMPUTE_DOMAINS = custom_resource(GROUP, VERSION, "computedomains", KIND)
"""The resource the compute-domain controller follows (``services.compute_domain.controller.domains``)."""


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
    what = create.add_mutually_exclusive_group(required=True)
    what.add_argument(
        "--device",
        action="append",
        metavar="[REQUEST:]DEVICE",
        help="allocated device (gpu-3, gpu-0-mig-1g10gb-19-0); repeat for more; REQUEST defaults to gpu or mig",
    )
    what.add_argument(
        "--domain",
        metavar="[NAMESPACE/]DOMAIN",
        help="a channel claim of this ComputeDomain (default: in the claim's namespace), on a free slot of --node",
    )
    create.add_argument(
        "--memory",
        metavar="QUANTITY",
        help="a share of each device with this much memory (a GPU published as shareable by consumable capacity)",
    )
    create.add_argument(
        "--capacity",
        action="append",
        metavar="NAME=QUANTITY",
        help="a share of each device with this much of a capacity (computePercent=50); repeat for more",
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
    get = verbs.add_parser(
        "get", parents=[common], help="one ResourceClaim, with what each driver reports of its devices"
    )
    get.add_argument("name", help="ResourceClaim name")
    get.add_argument("-n", "--namespace", default="default")
    get.add_argument("-o", "--output", choices=("text", "json"), default="text")
    get.set_defaults(run=run)
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
    if "-mig-" in device:
        return "mig.gpudra.io"
    return "vfio.gpudra.io" if device.endswith("-vfio") else "gpu.gpudra.io"


def _requests(devices: Sequence[tuple[str, str]], capacity: Mapping[str, int]) -> list[dict[str, Any]]:
    by_request: dict[str, list[str]] = {}
    for request, device in devices:
        by_request.setdefault(request, []).append(device)
    requests = []
    for request, names in by_request.items():
        classes = {device_class(name) for name in names}
        if len(classes) > 1:
            raise UsageError(
                f"request {request} mixes kinds of device ({', '.join(sorted(classes))}); give them separate requests"
            )
        exactly: dict[str, Any] = {
            "deviceClassName": classes.pop(),
            "allocationMode": "ExactCount",
            "count": len(names),
        }
        if capacity:
            exactly["capacity"] = {"requests": rendered(capacity)}
        requests.append({"name": request, "exactly": exactly})
    return requests


def claim_object(
    name: str,
    namespace: str,
    devices: Sequence[tuple[str, str]],
    config: Any,
    driver: str,
    *,
    capacity: Mapping[str, int] | None = None,
) -> Any:
    """The ResourceClaim as a user writes it (spec only); ``capacity`` is what each device's request asks."""
    spec: dict[str, Any] = {"requests": _requests(devices, capacity or {})}
    if config is not None:
        spec["config"] = [{"opaque": {"driver": driver, "parameters": config}}]
    return {
        "apiVersion": RESOURCE_CLAIMS.api_version,
        "kind": RESOURCE_CLAIMS.kind,
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"devices": spec},
    }


def allocation(results: Sequence[Mapping[str, Any]], config: Any, node: str, driver: str) -> dict[str, Any]:
    """``status.allocation`` as the scheduler writes it: the results (``cli.shares.allocate``), config from the
    claim, pinned to the node."""
    allocated: dict[str, Any] = {"results": [dict(result) for result in results]}
    if config is not None:
        allocated["config"] = [{"source": "FromClaim", "opaque": {"driver": driver, "parameters": config}}]
    return {"devices": allocated, "nodeSelector": pinned_to(node)}


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


def results_of(claim: dict[str, Any]) -> list[dict[str, Any]]:
    """The allocation's results (driver, pool, device), in order; none when the claim is not allocated."""
    allocation_ = (claim.get("status") or {}).get("allocation") or {}
    results = (allocation_.get("devices") or {}).get("results") or []
    return [result for result in results if isinstance(result, dict)]


def devices_of(claim: dict[str, Any]) -> list[str]:
    return [str(result.get("device")) for result in results_of(claim)]


def drivers_of(claim: dict[str, Any]) -> list[str]:
    """The drivers the allocation names, each once, in order: the kubelet calls each of them for the claim."""
    return list(dict.fromkeys(str(result.get("driver")) for result in results_of(claim)))


def table(claims: Sequence[dict[str, Any]], domains: Mapping[str, str] | None = None) -> str:
    """One line per claim; a channel slot shows as ``slot-0 on gb-1, domain NS/NAME`` (``domains``: UID → name);
    READY counts the devices whose driver reports them Ready in ``status.devices``."""
    rows = [("NAMESPACE", "NAME", "UID", "READY", "DEVICES")]
    for claim in claims:
        meta = claim["metadata"]
        devices = ", ".join(describe_channel(claim, domains or {})) or ",".join(devices_of(claim)) or "-"
        rows.append((meta.get("namespace", ""), meta["name"], meta.get("uid", ""), readiness(claim), devices))
    return columns(rows)


def device_statuses(claim: dict[str, Any]) -> list[dict[str, Any]]:
    return [entry for entry in (claim.get("status") or {}).get("devices") or () if isinstance(entry, dict)]


def ready_condition(entry: dict[str, Any]) -> dict[str, Any]:
    return next((c for c in entry.get("conditions") or () if isinstance(c, dict) and c.get("type") == "Ready"), {})


def readiness(claim: dict[str, Any]) -> str:
    """``ready/reported`` over the entries of ``status.devices``; ``-`` when no driver reports any."""
    entries = device_statuses(claim)
    if not entries:
        return "-"
    ready = sum(ready_condition(entry).get("status") == "True" for entry in entries)
    return f"{ready}/{len(entries)}"


def _allocated(result: Mapping[str, Any]) -> str:
    """A result; a share with what it consumed (``gpu-4 (share: memory 40Gi, computePercent 0)``)."""
    if not result.get("shareID"):
        return str(result.get("device"))
    consumed = ", ".join(f"{name} {amount}" for name, amount in (result.get("consumedCapacity") or {}).items())
    return f"{result.get('device')} (share: {consumed or 'nothing consumed'})"


def describe(claim: dict[str, Any]) -> str:
    """A claim for a person: its allocation, then each device as its driver reports it."""
    meta = claim["metadata"]
    lines = [f"resourceclaim {meta.get('namespace', '')}/{meta['name']} (uid {meta.get('uid', '')})"]
    results = results_of(claim)
    lines.append(f"allocated: {', '.join(map(_allocated, results)) or 'nothing yet'}")
    for entry in device_statuses(claim):
        ready = ready_condition(entry)
        state = f"Ready={ready.get('status', '?')} ({ready.get('reason', 'no Ready condition')})"
        lines.append(f"  {entry.get('device')} on {entry.get('pool')} [{entry.get('driver')}]: {state}")
        if ready.get("status") != "True" and ready.get("message"):
            lines.append(f"    {ready['message']}")
        data = entry.get("data") or {}
        if data.get("uuid"):
            lines.append(f"    uuid {data['uuid']}")
        if isinstance(data.get("mig"), dict):
            mig = data["mig"]
            lines.append(
                f"    MIG {mig.get('profile')} on {mig.get('parent')} at placement {mig.get('placementStart')}"
            )
        if data.get("cdiDeviceIDs"):
            lines.append(f"    CDI {', '.join(map(str, data['cdiDeviceIDs']))}")
        if isinstance(data.get("mpsClient"), dict):
            client = data["mpsClient"]
            percent = client.get("activeThreadPercentage")
            lines.append(
                f"    share {entry.get('shareID')}: MPS client, pinned memory limit "
                f"{client.get('pinnedDeviceMemoryLimitBytes')} bytes, "
                + (f"{percent}% of the threads" if percent is not None else "no thread cap")
            )
    return "\n".join(lines)


def describe_channel(claim: dict[str, Any], domains: Mapping[str, str]) -> list[str]:
    """The channel slots a claim holds, each with its node and domain; empty for a claim of other devices."""
    held = [result for result in results_of(claim) if result.get("driver") == CHANNEL_DRIVER]
    if not held:
        return []
    uid = channel_domain_uid(claim)
    domain = domains.get(uid, f"uid {uid} (not in the store)") if uid else "none configured"
    return [f"{result.get('device')} on {result.get('pool')}, domain {domain}" for result in held]


def channel_domain_uid(claim: dict[str, Any]) -> str:
    """The ``domainID`` of the claim's ComputeDomainChannelConfig (the last one, as the node reads it), or ""."""
    spec = ((claim.get("spec") or {}).get("devices") or {}).get("config") or []
    found = ""
    for entry in spec:
        opaque = entry.get("opaque") if isinstance(entry, dict) else None
        if not isinstance(opaque, dict) or opaque.get("driver") != CHANNEL_DRIVER:
            continue
        parameters = opaque.get("parameters")
        if isinstance(parameters, dict):
            found = str(parameters.get("domainID") or "")
    return found


def columns(rows: Sequence[Sequence[str]]) -> str:
    """Rows as left-aligned columns two spaces apart, the first row the header."""
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows)


# --- channel claims of a ComputeDomain (pure) ---------------------------------------------------------------


def is_dns_subdomain(text: str) -> bool:
    """Whether ``text`` can name a Kubernetes object: dot-separated DNS labels, 253 characters at most."""
    return len(text) <= 253 and all(is_dns_label(part) for part in text.split("."))


def parse_domain_ref(text: str, namespace: str) -> tuple[str, str]:
    """``--domain NAME`` (in the claim's namespace ``namespace``) or ``NAMESPACE/NAME`` -> (namespace, name)."""
    domain_namespace, slash, name = text.partition("/")
    if not slash:
        domain_namespace, name = namespace, text
    if not is_dns_label(domain_namespace) or not is_dns_subdomain(name):
        raise UsageError(
            f"--domain {text!r}: give NAME or NAMESPACE/NAME, a DNS label and a DNS subdomain (a-z, 0-9, '-', '.')"
        )
    return domain_namespace, name


def channel_claim_object(name: str, namespace: str, domain: ComputeDomain) -> dict[str, Any]:
    """The claim a pod gets from the domain's claim template (as the controller renders it), named ``name``.

    One request of class ``compute-domain-default-channel.gpudra.io`` and the ``ComputeDomainChannelConfig``
    (domain UID, allocation mode); built from the controller's own template so the two cannot drift."""
    return {
        "apiVersion": RESOURCE_CLAIMS.api_version,
        "kind": RESOURCE_CLAIMS.kind,
        "metadata": {"name": name, "namespace": namespace},
        "spec": workload_claim_template(domain)["spec"]["spec"],
    }


def channel_allocation(claim: dict[str, Any], node: str, slot: str) -> dict[str, Any]:
    """``status.allocation`` of a channel claim: its one request on ``slot`` of the node, its configs copied."""
    devices = claim["spec"]["devices"]
    result = {"request": devices["requests"][0]["name"], "driver": CHANNEL_DRIVER, "pool": node, "device": slot}
    configs = [{"source": "FromClaim", **entry} for entry in devices.get("config") or []]
    return {"devices": {"results": [result], "config": configs}, "nodeSelector": pinned_to(node)}


def _slot_order(device: str) -> tuple[int, int, str]:
    number = device.removeprefix(SLOT_PREFIX)
    return (0, int(number), device) if device.startswith(SLOT_PREFIX) and number.isdigit() else (1, 0, device)


def held_slots(claims: Sequence[dict[str, Any]], node: str) -> dict[str, str]:
    """Channel slot of ``node`` -> the claim (``namespace/name``) whose allocation holds it."""
    held = {}
    for claim in claims:
        meta = claim.get("metadata") or {}
        for result in results_of(claim):
            if result.get("driver") == CHANNEL_DRIVER and result.get("pool") == node:
                held[str(result.get("device"))] = f"{meta.get('namespace')}/{meta.get('name')}"
    return held


def free_slot(published: set[str], held: Mapping[str, str], node: str) -> str:
    """The lowest slot ``node`` publishes that no claim holds, as the scheduler would pick one; else why not."""
    if not published:
        raise UsageError(
            f"node {node} publishes no {CHANNEL_DRIVER} ResourceSlice: no channel claim can be allocated there "
            "(is compute_domain running on it, on a node with NVLink fabric?)"
        )
    free = sorted(published - set(held), key=_slot_order)
    if not free:
        holders = ", ".join(f"{slot} by {held[slot]}" for slot in sorted(published, key=_slot_order))
        raise UsageError(f"node {node} has no free channel slot: all {len(published)} are held ({holders})")
    return free[0]


# --- talking to the store ---------------------------------------------------------------------------------


def _system_defaults(args: argparse.Namespace) -> tuple[str, str]:
    """(node, driver): flags first, else the running system's, else the standalone defaults."""
    try:
        system = endpoints.read(args.state_dir)
        node, driver = system.node, system.drivers.get("gpu", DEFAULT_DRIVER)
    except endpoints.NotRunning:
        node, driver = DEFAULT_NODE, DEFAULT_DRIVER
    return args.node or node, args.driver or driver


async def with_store(args: argparse.Namespace) -> tuple[Bus, KubeApi]:
    bus = await context.connect(args)
    try:
        return bus, await LocalKube.open(bus.js)
    except KubeError:
        await bus.close()
        raise


async def published_devices(kube: KubeApi, node: str, driver: str) -> dict[str, dict[str, Any]]:
    """The devices ``node`` publishes for ``driver`` in its ResourceSlices, by name: all the scheduler could
    allocate, with the capacities it would allocate from."""
    slices = await kube.list(RESOURCE_SLICES, fields={"spec.nodeName": node, "spec.driver": driver})
    return {device["name"]: device for item in slices.items for device in item["spec"].get("devices", [])}


def unpublished_problem(wanted: Sequence[str], published: Collection[str], node: str, driver: str) -> str | None:
    """Why an allocation of ``wanted`` could not have come from the scheduler, or None."""
    if not published:
        return f"node {node} publishes no {driver} devices (is discovery running on it?)"
    missing = [device for device in wanted if device not in published]
    if not missing:
        return None
    return f"node {node} publishes no device {', '.join(missing)}; it has {', '.join(sorted(published))}"


async def create_claim(kube: KubeApi, args: argparse.Namespace) -> dict[str, Any]:
    if args.domain is not None:
        return await create_channel_claim(kube, args)
    devices = parse_devices(args.device)
    config = read_config(args.config, check=not args.no_check)
    node, driver = _system_defaults(args)
    published = await published_devices(kube, node, driver)
    problem = unpublished_problem([device for _, device in devices], published, node, driver)
    if problem:
        raise UsageError(problem)
    try:
        capacity = parse_capacity_requests(args.capacity or [], args.memory)
        claims = (await kube.list(RESOURCE_CLAIMS)).items if capacity or _shareable(devices, published) else []
        results = allocate(devices, capacity, published, claims, node=node, driver=driver)
    except AllocationRefused as exc:
        raise UsageError(str(exc)) from None
    claim = claim_object(args.name, args.namespace, devices, config, driver, capacity=capacity)
    created = await kube.create(RESOURCE_CLAIMS, claim)
    created["status"] = {"allocation": allocation(results, config, node, driver)}
    stored: dict[str, Any] = await kube.update_status(RESOURCE_CLAIMS, created)
    return stored


def _shareable(devices: Sequence[tuple[str, str]], published: Mapping[str, Mapping[str, Any]]) -> bool:
    return any(published[device].get("allowMultipleAllocations") for _, device in devices)


async def create_channel_claim(kube: KubeApi, args: argparse.Namespace) -> dict[str, Any]:
    """A channel claim of ``--domain``, allocated to a free slot of ``--node`` (the claim a pod would get)."""
    for flag, given in (
        ("--config", args.config is not None),
        ("--no-check", args.no_check),
        ("--memory", args.memory is not None),
        ("--capacity", bool(args.capacity)),
        ("--driver", args.driver),
    ):
        if given:
            raise UsageError(f"{flag} is for GPU claims; a --domain claim carries the domain's channel config")
    if not is_dns_label(args.namespace):
        raise UsageError(f"--namespace {args.namespace!r} must be a DNS label (a-z, 0-9, '-')")
    namespace, name = parse_domain_ref(args.domain, args.namespace)
    domain = await read_domain(kube, namespace, name)
    if domain.metadata.deletion_timestamp:
        raise UsageError(f"{domain} is being deleted (since {domain.metadata.deletion_timestamp})")
    if namespace != args.namespace:
        print(
            f"warning: {domain} is in namespace {namespace}, the claim in {args.namespace}: a node refuses to "
            "prepare a channel claim outside its domain's namespace (creating it anyway)",
            file=sys.stderr,
            flush=True,
        )
    node, _ = _system_defaults(args)
    published = await published_devices(kube, node, CHANNEL_DRIVER)
    slot = free_slot(set(published), held_slots((await kube.list(RESOURCE_CLAIMS)).items, node), node)
    claim = channel_claim_object(args.name, args.namespace, domain)
    created = await kube.create(RESOURCE_CLAIMS, claim)
    created["status"] = {"allocation": channel_allocation(claim, node, slot)}
    stored: dict[str, Any] = await kube.update_status(RESOURCE_CLAIMS, created)
    return stored


async def read_domain(kube: KubeApi, namespace: str, name: str) -> ComputeDomain:
    """The domain ``namespace/name`` as the controller reads it; a missing or malformed one is a usage error."""
    try:
        obj = await kube.get(COMPUTE_DOMAINS, name, namespace)
    except NotFound:
        raise UsageError(
            f"no ComputeDomain {namespace}/{name} in the standalone store "
            f"(create one with `gpudra domain create {name} --nodes N -n {namespace}`)"
        ) from None
    try:
        return decode_domain(obj)
    except ApiObjectError as exc:
        raise UsageError(str(exc)) from None


def can_look_up(args: argparse.Namespace) -> bool:
    """Whether a store can be reached: a NATS URL was given, or a standalone system runs in the state dir."""
    return bool(args.nats_url) or (Path(args.state_dir) / endpoints.FILENAME).is_file()


async def lookup_claim(args: argparse.Namespace, namespace: str, name: str) -> dict[str, Any]:
    """The claim ``namespace/name`` in the standalone store (for ``gpudra kubelet prepare NAME``: its UID and
    the driver its allocation names)."""
    bus, kube = await with_store(args)
    try:
        claim: dict[str, Any] = await kube.get(RESOURCE_CLAIMS, name, namespace)
    except NotFound:
        raise LookupFailed(
            f"no ResourceClaim {namespace}/{name} in the standalone store; create one with "
            f"`gpudra claim create {name} --device gpu-0`, or pass --uid"
        ) from None
    finally:
        await bus.close()
    return claim


async def lookup_uid(args: argparse.Namespace, namespace: str, name: str) -> str:
    """The UID of the claim ``namespace/name`` in the standalone store."""
    return str((await lookup_claim(args, namespace, name))["metadata"]["uid"])


async def delete_claim(kube: KubeApi, args: argparse.Namespace) -> int:
    try:
        await kube.delete(RESOURCE_CLAIMS, args.name, args.namespace)
    except NotFound:
        raise UsageError(f"no ResourceClaim {args.namespace}/{args.name} in the standalone store") from None
    print(f"resourceclaim {args.namespace}/{args.name} deleted")
    return 0


async def domain_names(kube: KubeApi, claims: Sequence[dict[str, Any]]) -> dict[str, str]:
    """Domain UID -> ``namespace/name``, for the domains channel claims name (none listed when none do)."""
    if not any(channel_domain_uid(claim) for claim in claims):
        return {}
    domains = (await kube.list(COMPUTE_DOMAINS)).items
    return {
        str(obj["metadata"].get("uid")): f"{obj['metadata'].get('namespace')}/{obj['metadata']['name']}"
        for obj in domains
    }


def print_json(value: object) -> None:
    print(msgspec.json.format(msgspec.json.encode(value)).decode(), flush=True)


async def _run(args: argparse.Namespace) -> int:
    bus, kube = await with_store(args)
    try:
        if args.verb == "create":
            claim = await create_claim(kube, args)
            if args.output == "json":
                print_json(claim)
            else:
                meta = claim["metadata"]
                devices = describe_channel(claim, await domain_names(kube, [claim])) or devices_of(claim)
                print(
                    f"resourceclaim {meta['namespace']}/{meta['name']} created (uid {meta['uid']}), allocated "
                    f"{', '.join(devices)}"
                )
            return 0
        if args.verb == "delete":
            return await delete_claim(kube, args)
        if args.verb == "get":
            found = await kube.get(RESOURCE_CLAIMS, args.name, args.namespace)
            print_json(found) if args.output == "json" else print(describe(found))
            return 0
        claims = (await kube.list(RESOURCE_CLAIMS, args.namespace or None)).items
        if args.output == "json":
            print_json(claims)
        else:
            print(table(claims, await domain_names(kube, claims)))
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
