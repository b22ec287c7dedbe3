"""Find the running system for a command: ``--nats-url`` if given, else ``<state-dir>/endpoints.json``.

Credentials follow the same rule: ``--nats-creds`` (or ``GPUDRA_NATS_CREDS``) if given, else the operator's
credentials that ``gpudra up`` named in ``endpoints.json``.
"""

from __future__ import annotations

import argparse
import os

from cli import endpoints
from libs.bus import Bus
from libs.settings import CommonSettings, env_name

OPERATOR = "operator"
"""Every command connects as the operator: its credentials confine replies to ``_INBOX.operator.…``."""


def settings(args: argparse.Namespace) -> CommonSettings:
    creds = args.nats_creds or os.environ.get(env_name("nats_creds"), "")
    if args.nats_url:
        return CommonSettings(nats_url=str(args.nats_url), nats_creds=creds)
    system = endpoints.read(args.state_dir)
    return CommonSettings(nats_url=system.nats_url, nats_creds=creds or system.nats_creds, node_name=system.node)


async def connect(args: argparse.Namespace) -> Bus:
    return await Bus.connect(settings(args), OPERATOR)
