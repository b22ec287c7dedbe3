"""Find the running system for a command: ``--nats-url`` (or ``GPUDRA_NATS_URL``) if given, else
``<state-dir>/endpoints.json``.

Credentials follow the same rule: ``--nats-creds`` (or ``GPUDRA_NATS_CREDS``) if given, else the operator's
credentials that ``gpudra up`` named in ``endpoints.json``.
"""

from __future__ import annotations

import argparse
import os

import msgspec

from cli import endpoints
from libs.bus import Bus
from libs.settings import CommonSettings, env_name, load_settings

OPERATOR = "operator"
"""Every command connects as the operator: its credentials confine replies to ``_INBOX.operator.…``."""


def settings(args: argparse.Namespace) -> CommonSettings:
    """The shell's ``GPUDRA_*`` settings (a token file, TLS), with the system's URL and credentials."""
    base = load_settings(CommonSettings, [], os.environ)
    creds = args.nats_creds or base.nats_creds
    url = args.nats_url or os.environ.get(env_name("nats_url"), "")
    if url:
        return msgspec.structs.replace(base, nats_url=str(url), nats_creds=creds)
    system = endpoints.read(args.state_dir)
    return msgspec.structs.replace(
        base, nats_url=system.nats_url, nats_creds=creds or system.nats_creds, node_name=system.node
    )


async def connect(args: argparse.Namespace) -> Bus:
    return await Bus.connect(settings(args), OPERATOR)
