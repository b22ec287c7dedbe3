"""The ``gpudra`` command: start the standalone system, and act as operator (and later as kubelet)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from cli import bus, claims, devices, domains, events, faults, health, kubelet, services, slices, up
from cli.endpoints import NotRunning
from libs.bus import BusError, CommandError
from libs.settings import SettingsError
from libs.telemetry import configure_logging


def common_options() -> argparse.ArgumentParser:
    """Options every command takes after its name, e.g. ``gpudra up --state-dir DIR``."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--state-dir", default=".gpudra", help="standalone system's state directory (default ./.gpudra)"
    )
    common.add_argument("--nats-url", default="", help="use this NATS server instead of the state dir's")
    common.add_argument(
        "--nats-creds",
        default="",
        help="NATS credentials file (default: $GPUDRA_NATS_CREDS, else the operator's from the state dir)",
    )
    common.add_argument("--log-level", default="WARNING", help="log level of the command itself")
    return common


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="gpudra", description=__doc__)
    commands = root.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = common_options()
    for module in (up, services, events, kubelet, devices, slices, claims, domains, faults, health, bus):
        module.add_parser(commands, common)
    return root


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line; a usage error exits 2 with argparse's message.

    Python 3.11's argparse turns ``--option=--`` into ``[]`` instead of the text ``--`` (later versions do not);
    no option here takes a list, so such a value is refused here rather than crashing the command later."""
    root = parser()
    args = root.parse_args(argv)
    for name, value in vars(args).items():
        if value == [] or (isinstance(value, list) and [] in value):
            root.error(f"argument --{name.replace('_', '-')}: expected a value, not '--'")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse(argv)
    level = "INFO" if args.command == "up" and args.log_level == "WARNING" else args.log_level
    configure_logging(level.upper(), "text")
    try:
        code = args.run(args)
    except (NotRunning, BusError, CommandError, SettingsError) as exc:
        print(f"gpudra: {exc}", file=sys.stderr)
        code = 1
    logging.shutdown()
    sys.exit(code)
