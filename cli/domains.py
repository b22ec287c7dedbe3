"""``gpudra domain create|get|list|delete``: ComputeDomains in the standalone store.

The standalone store keeps whatever it is given (it has no CRD schema to check against), so ``create`` checks
what it writes with the structs the controller reads (``services.compute_domain.api``) and refuses what the API
server would refuse, or what could never work, with exit code 2. The controller (``compute_domain``) does the
rest: its finalizer, the claim template, the status. ``get --wait-ready`` watches the domain until the
controller says Ready.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
from collections.abc import Sequence
from contextlib import aclosing
from typing import Any

import msgspec

from cli.claims import COMPUTE_DOMAINS, EXIT_USAGE, UsageError, columns, is_dns_subdomain, print_json, with_store
from libs.kube import AlreadyExists, KubeApi, KubeError, NotFound
from libs.kube.resources import is_dns_label
from services.compute_domain.api import (
    API_VERSION,
    FINALIZER,
    KIND,
    MAX_NODES_PER_CLIQUE,
    ApiObjectError,
    ComputeDomain,
    ComputeDomainSpec,
    Condition,
    decode_domain,
)

DEFAULT_NAMESPACE = "default"
CHANNEL_MODES = {"single": "Single", "all": "All"}
INT64_MAX = 2**63 - 1


class NotReadyInTime(Exception):
    """``--wait-ready`` ran out; the message says how the domain was last seen."""


def add_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    domain = subparsers.add_parser("domain", help="ComputeDomains (multi-node NVLink) in the standalone store")
    verbs = domain.add_subparsers(dest="verb", required=True)
    create = verbs.add_parser("create", parents=[common], help="store a ComputeDomain")
    create.add_argument("name", help="ComputeDomain name (a DNS label)")
    create.add_argument("--nodes", type=int, required=True, metavar="K", help="nodes the domain waits for (>= 1)")
    create.add_argument("-n", "--namespace", default=DEFAULT_NAMESPACE)
    create.add_argument(
        "--channels",
        choices=tuple(CHANNEL_MODES),
        default="single",
        help="single: a claim gets one IMEX channel; all: every channel of the node",
    )
    create.add_argument("--claim-template", default="", help="workload ResourceClaimTemplate name (NAME-channel)")
    get = verbs.add_parser("get", parents=[common], help="show a ComputeDomain's status and nodes")
    get.add_argument("name", help="ComputeDomain name")
    get.add_argument("-n", "--namespace", default=DEFAULT_NAMESPACE)
    get.add_argument(
        "--wait-ready", type=float, metavar="SECONDS", help="wait until it is Ready (exit 1 if not in time)"
    )
    listing = verbs.add_parser("list", parents=[common], help="list ComputeDomains")
    where = listing.add_mutually_exclusive_group()
    where.add_argument("-n", "--namespace", default=DEFAULT_NAMESPACE)
    where.add_argument("-A", "--all-namespaces", action="store_true", help="every namespace")
    delete = verbs.add_parser("delete", parents=[common], help="delete a ComputeDomain (the controller finalizes)")
    delete.add_argument("name", help="ComputeDomain name")
    delete.add_argument("-n", "--namespace", default=DEFAULT_NAMESPACE)
    for parser in (create, get, listing, delete):
        parser.add_argument("-o", "--output", choices=("text", "json"), default="text")
        parser.set_defaults(run=run)


# --- the object (pure) --------------------------------------------------------------------------------------


def domain_object(name: str, namespace: str, nodes: int, channels: str, template: str) -> dict[str, Any]:
    """The ComputeDomain as a user writes it, or ``UsageError`` for what the API server (or sense) refuses."""
    if not is_dns_label(name):
        raise UsageError(f"the name {name!r} must be a DNS label (a-z, 0-9, '-', at most 63 characters)")
    if not is_dns_label(namespace):
        raise UsageError(f"--namespace {namespace!r} must be a DNS label (a-z, 0-9, '-')")
    if nodes < 1:
        raise UsageError(f"--nodes {nodes}: a domain needs at least one node")
    if nodes > INT64_MAX:
        raise UsageError(f"--nodes {nodes}: the API's integers are 64-bit; a domain has at most a few nodes")
    template = template or f"{name}-channel"
    if not is_dns_subdomain(template):
        raise UsageError(f"--claim-template {template!r} must be a DNS subdomain (a-z, 0-9, '-', '.')")
    spec = {
        "numNodes": nodes,
        "channel": {"resourceClaimTemplate": {"name": template}, "allocationMode": CHANNEL_MODES[channels]},
    }
    try:
        msgspec.convert(spec, ComputeDomainSpec, strict=True)
    except msgspec.ValidationError as exc:
        raise UsageError(f"the spec would not be a valid ComputeDomain: {exc}") from None
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def ready_condition(domain: ComputeDomain) -> Condition | None:
    return next((c for c in domain.status.conditions if c.type == "Ready"), None)


def reason_of(domain: ComputeDomain) -> str:
    """``Reason: message`` of the Ready condition, or what it means that there is none."""
    condition = ready_condition(domain)
    if condition is None:
        return "no status yet (is the compute_domain controller running?)"
    return f"{condition.reason}: {condition.message}" if condition.message else condition.reason


def ready_nodes(domain: ComputeDomain) -> int:
    return sum(node.status == "Ready" for node in domain.status.nodes)


def describe(domain: ComputeDomain) -> str:
    """``gpudra domain get``: the status, why, and the nodes."""
    meta, spec = domain.metadata, domain.spec
    lines = [
        f"computedomain {meta.namespace}/{meta.name} (uid {meta.uid})",
        f"  status:   {domain.status.status}",
        f"  reason:   {reason_of(domain)}",
        f"  nodes:    {ready_nodes(domain)} of {spec.num_nodes} ready, {len(domain.status.nodes)} joined",
        f"  channel:  claim template {spec.channel.resource_claim_template.name}, "
        f"allocation mode {spec.channel.allocation_mode}",
    ]
    if meta.deletion_timestamp:
        lines.append(f"  deleting: since {meta.deletion_timestamp}, {pending(domain)}")
    if domain.status.nodes:
        rows = [("NODE", "INDEX", "CLIQUE", "STATUS", "IP")]
        rows += [(n.name, str(n.index), n.clique_id, n.status, n.ip_address) for n in domain.status.nodes]
        lines += ["", columns(rows)]
    return "\n".join(lines)


def pending(domain: ComputeDomain) -> str:
    """Why a deleted domain is still there: the finalizers that hold it."""
    held = domain.metadata.finalizers
    if held == [FINALIZER]:
        return f"held by the controller's finalizer {FINALIZER} until it has deleted the claim template"
    return f"held by finalizer(s) {', '.join(held)}"


def table(objects: Sequence[dict[str, Any]]) -> str:
    """``gpudra domain list``: one line per domain; one the controller could not read says so."""
    rows = [("NAMESPACE", "NAME", "NODES", "READY", "STATUS", "REASON")]
    for obj in objects:
        meta = obj.get("metadata") or {}
        try:
            domain = decode_domain(obj)
        except ApiObjectError as exc:
            rows.append((str(meta.get("namespace")), str(meta.get("name")), "?", "?", "Invalid", str(exc)))
            continue
        condition = ready_condition(domain)
        status = "Deleting" if domain.metadata.deletion_timestamp else domain.status.status
        rows.append(
            (
                domain.metadata.namespace,
                domain.metadata.name,
                str(domain.spec.num_nodes),
                str(ready_nodes(domain)),
                status,
                condition.reason if condition else "-",
            )
        )
    return columns(rows)


# --- talking to the store -----------------------------------------------------------------------------------


async def read(kube: KubeApi, namespace: str, name: str) -> dict[str, Any]:
    if not is_dns_label(namespace) or not is_dns_subdomain(name):
        raise UsageError(f"no ComputeDomain can be named {namespace!r}/{name!r}")
    try:
        obj: dict[str, Any] = await kube.get(COMPUTE_DOMAINS, name, namespace)
    except NotFound:
        raise UsageError(f"no ComputeDomain {namespace}/{name} in the standalone store") from None
    return obj


def decoded(obj: dict[str, Any]) -> ComputeDomain:
    """The domain as the controller reads it; one it could not read is an error (exit 1) naming the field."""
    try:
        return decode_domain(obj)
    except ApiObjectError as exc:
        raise KubeError("", str(exc)) from None


async def create(kube: KubeApi, args: argparse.Namespace) -> dict[str, Any]:
    obj = domain_object(args.name, args.namespace, args.nodes, args.channels, args.claim_template)
    if args.nodes > MAX_NODES_PER_CLIQUE:
        print(
            f"warning: a domain is one NVLink clique, of at most {MAX_NODES_PER_CLIQUE} nodes: "
            f"with --nodes {args.nodes} it will never be Ready",
            file=sys.stderr,
            flush=True,
        )
    try:
        created: dict[str, Any] = await kube.create(COMPUTE_DOMAINS, obj)
    except AlreadyExists:
        raise KubeError(
            "",
            f"ComputeDomain {args.namespace}/{args.name} already exists (its spec cannot change: delete it first)",
        ) from None
    return created


async def wait_ready(kube: KubeApi, obj: dict[str, Any], seconds: float) -> dict[str, Any]:
    """The domain once its status is Ready, as a watch reports it; ``NotReadyInTime`` with the last reason.

    The deadline does not rely on the watch taking its cancellation: nats-py swallows a cancellation that lands
    in its flush (``Client._flush_pending``), which would leave a watch parked for good. The watch runs as a task
    that is abandoned at the deadline; closing the bus afterwards ends it."""
    if not math.isfinite(seconds) or seconds < 0:
        raise UsageError(f"--wait-ready {seconds}: give the seconds to wait, 0 or more")
    meta = obj["metadata"]
    last = decoded(obj)

    async def until_ready() -> dict[str, Any]:
        nonlocal last
        watch = kube.watch(COMPUTE_DOMAINS, meta["namespace"], fields={"metadata.name": meta["name"]})
        async with aclosing(watch) as events:
            async for kind, changed in events:
                if kind == "DELETED":
                    raise NotReadyInTime(f"{last} was deleted before it was Ready")
                last = decoded(changed)
                if last.status.status == "Ready":
                    return changed
        raise NotReadyInTime(f"the watch of {last} ended")  # a watch does not end by itself

    task = asyncio.create_task(until_ready())
    done, _ = await asyncio.wait({task}, timeout=seconds)
    if task in done:
        return task.result()
    task.add_done_callback(lambda ended: ended.cancelled() or ended.exception())
    task.cancel()
    raise NotReadyInTime(f"{last} is not Ready after {seconds:g} s: {last.status.status}, {reason_of(last)}")


async def delete(kube: KubeApi, args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    """The domain as last seen, and what became of it: deleted, or marked and held by its finalizer."""
    obj = await read(kube, args.namespace, args.name)
    try:
        await kube.delete(COMPUTE_DOMAINS, args.name, args.namespace)
        obj = await kube.get(COMPUTE_DOMAINS, args.name, args.namespace)
    except NotFound:
        return obj, f"computedomain {args.namespace}/{args.name} deleted"
    domain = decoded(obj)
    return obj, f"computedomain {args.namespace}/{args.name}: deletion pending, {pending(domain)}"


async def _run(args: argparse.Namespace) -> int:
    bus, kube = await with_store(args)
    try:
        if args.verb == "create":
            created = await create(kube, args)
            domain = decoded(created)
            text = (
                f"computedomain {args.namespace}/{args.name} created (uid {domain.metadata.uid}): "
                f"{domain.spec.num_nodes} node(s), claim template {domain.spec.channel.resource_claim_template.name}"
            )
            _show(args, created, text)
        elif args.verb == "get":
            obj = await read(kube, args.namespace, args.name)
            if args.wait_ready is not None:
                obj = await wait_ready(kube, obj, args.wait_ready)
            _show(args, obj, describe(decoded(obj)))
        elif args.verb == "list":
            namespace = None if args.all_namespaces else args.namespace
            items = (await kube.list(COMPUTE_DOMAINS, namespace)).items
            _show(args, items, table(items))
        else:
            obj, text = await delete(kube, args)
            _show(args, obj, text)
        return 0
    finally:
        await bus.close()


def _show(args: argparse.Namespace, value: object, text: str) -> None:
    if args.output == "json":
        print_json(value)
    else:
        print(text, flush=True)


def run(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_run(args))
    except UsageError as exc:
        print(f"gpudra domain {args.verb}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (KubeError, NotReadyInTime) as exc:
        print(f"gpudra domain {args.verb}: {exc}", file=sys.stderr)
        return 1
