"""Find the running system for a command: ``--nats-url`` if given, else ``<state-dir>/endpoints.json``."""

from __future__ import annotations

import argparse

from cli import endpoints
from libs.bus import Bus
from libs.settings import CommonSettings


def nats_url(args: argparse.Namespace) -> str:
    if args.nats_url:
        return str(args.nats_url)
    return endpoints.read(args.state_dir).nats_url


async def connect(args: argparse.Namespace, client: str = "cli") -> Bus:
    return await Bus.connect(CommonSettings(nats_url=nats_url(args)), client)
