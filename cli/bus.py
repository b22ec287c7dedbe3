"""``gpudra bus``: set up the bus outside ``gpudra up`` — its streams and buckets, and who may use it.

- ``bootstrap``: create or update every stream and bucket (the bootstrap role's job; the controller's init
  step in a cluster).
- ``trust``: a standalone authority in a directory, the nats-server settings that trust it, and a
  credentials file per client (docker-compose runs it before the server starts).
- ``callout-secret``: the Kubernetes Secret the in-cluster auth callout and nats-server share (an issuer key
  and the callout's own password), printed for ``kubectl apply -f -``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import secrets
from pathlib import Path

import msgspec
import yaml

from cli import context
from libs.bus import Bus
from libs.bus.topology import BusLimits
from libs.files import write_atomically
from libs.settings import env_name, load_settings
from libs.trust.authority import Authority
from libs.trust.keys import Kind, new_seed, public_key
from libs.trust.roles import PRINCIPALS

BOOTSTRAP = "bootstrap"


def add_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    parser = subparsers.add_parser("bus", help="set up the bus: streams and buckets, credentials")
    verbs = parser.add_subparsers(dest="verb", required=True)

    limits = ", ".join(env_name(field.name) for field in msgspec.structs.fields(BusLimits))
    bootstrap = verbs.add_parser(
        BOOTSTRAP,
        parents=[common],
        help="create or update every stream and bucket",
        description=f"Create or update every stream and bucket, with the limits in {limits} (see docs/deploy.md).",
    )
    bootstrap.set_defaults(run=run_bootstrap)

    trust = verbs.add_parser(
        "trust", parents=[common], help="a standalone authority, its nats-server settings and credentials"
    )
    trust.add_argument("--dir", required=True, type=Path, help="where the authority and credentials live")
    trust.add_argument("--node", default="node-0", help="the node the services run on (default node-0)")
    trust.set_defaults(run=run_trust)

    secret = verbs.add_parser(
        "callout-secret", parents=[common], help="print the Secret the auth callout and nats-server share"
    )
    secret.add_argument("--namespace", default="gpudra-system")
    secret.add_argument("--name", default="gpudra-nats-auth")
    secret.set_defaults(run=run_callout_secret)


async def _bootstrap(args: argparse.Namespace) -> int:
    limits = load_settings(BusLimits, [], os.environ)
    bus = await Bus.connect(context.settings(args), BOOTSTRAP)
    try:
        await bus.bootstrap(limits)
    finally:
        await bus.close()
    print(f"streams and buckets are in place: {msgspec.json.encode(limits).decode()}")
    return 0


def run_bootstrap(args: argparse.Namespace) -> int:
    return asyncio.run(_bootstrap(args))


def run_trust(args: argparse.Namespace) -> int:
    """Idempotent for the authority (kept), fresh for the users (minted again)."""
    authority = Authority.open(args.dir)
    config = args.dir / "nats-auth.json"
    write_atomically(config, json.dumps(authority.server_config(), indent=2).encode(), mode=0o600)
    print(f"nats-server settings: {config} (give it to nats-server with -c)")
    for principal, roles in PRINCIPALS.items():
        path = authority.issue(args.dir / "users" / f"{principal}.creds", principal, roles, args.node)
        print(f"{principal:18} {path}  ({', '.join(roles)})")
    return 0


def callout_secret(namespace: str, name: str) -> dict[str, object]:
    issuer = new_seed(Kind.ACCOUNT)
    values = {"issuer.nk": issuer, "issuer.pub": public_key(issuer), "password": secrets.token_urlsafe(32)}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app.kubernetes.io/part-of": "gpudra"}},
        "type": "Opaque",
        "data": {key: base64.b64encode(value.encode()).decode() for key, value in values.items()},
    }


def run_callout_secret(args: argparse.Namespace) -> int:
    print(yaml.safe_dump(callout_secret(args.namespace, args.name), sort_keys=False), end="")
    return 0
