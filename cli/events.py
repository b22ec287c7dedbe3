"""``gpudra events tail``: live events, one readable line each (or CloudEvents JSON with ``-o json``)."""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import datetime as dt
import logging
import signal
from collections.abc import Mapping
from typing import Any

import msgspec
from nats.aio.msg import Msg

from cli import context
from libs.bus.provenance import relayed_delivery
from libs.events.subjects import ROOT

log = logging.getLogger(__name__)

DECIMALS = 3
"""Durations and other measurements: milliseconds to the microsecond, not to the float's last digit."""


def add_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    events = subparsers.add_parser("events", help="watch the event bus")
    verbs = events.add_subparsers(dest="verb", required=True)
    tail = verbs.add_parser("tail", parents=[common], help="print live events, one line each")
    tail.add_argument("--subject", default=f"{ROOT}.>", help=f"subject filter (default {ROOT}.>)")
    tail.add_argument(
        "-o", "--output", choices=("line", "json"), default="line", help="one line per event, or CloudEvents JSON"
    )
    tail.add_argument("--json", action="store_const", const="json", dest="output", help="the same as -o json")
    tail.add_argument("--width", type=int, default=0, help="cut lines at this many characters (default: never)")
    tail.add_argument("--count", type=int, default=0, help="exit after this many events")
    tail.set_defaults(run=run)


def _short(value: Any) -> Any:
    """The catalogue's common shapes, as a person would name them: claims, entities, devices, timings."""
    if isinstance(value, dict):
        if {"namespace", "name"} <= value.keys():
            return f"{value['namespace']}/{value['name']}"
        if {"kind", "id"} <= value.keys():
            return f"{value['kind']}:{value.get('device') or value['id']}"
        if "device" in value:
            return value["device"]
        if "total" in value:
            return f"{value['total']:.1f}ms"
    if isinstance(value, list) and value and all(isinstance(item, dict) and "device" in item for item in value):
        return ",".join(str(item["device"]) for item in value)
    return value


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, DECIMALS)
    if isinstance(value, dict):
        return {key: _rounded(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_rounded(item) for item in value]
    return value


def _value(value: Any) -> str:
    value = _short(_rounded(value))
    if isinstance(value, str):
        return value if value and " " not in value else repr(value)
    return msgspec.json.encode(value).decode()


def format_line(subject: str, headers: Mapping[str, str], data: bytes, width: int = 0) -> str:
    """``time node type subject=… field=value …`` — the fields of the event, compact; cut at ``width`` (0:
    never, so a pipe into grep sees every field)."""
    time = headers.get("ce-time", "")
    with contextlib.suppress(ValueError):
        time = dt.datetime.fromisoformat(time).astimezone().strftime("%H:%M:%S.%f")[:-3]
    kind = headers.get("ce-type", "?").removeprefix("io.gpudra.")
    try:
        fields = msgspec.json.decode(data)
    except msgspec.DecodeError:
        fields = {"data": data[:80].decode(errors="replace")}
    node = fields.pop("node", "") if isinstance(fields, dict) else ""
    parts = [time, node or "-", kind, f"subject={headers.get('ce-subject', '')}"]
    if reason := headers.get("gpudra-dlq-reason"):
        parts.append(f"dead-letter={reason!r}")
    if isinstance(fields, dict):
        parts.extend(f"{key}={_value(value)}" for key, value in fields.items() if value not in ("", [], {}, None))
    line = "  ".join(parts)
    return line if not width or len(line) <= width else line[: width - 1] + "…"


def structured(headers: Mapping[str, str], data: bytes) -> str:
    """The same event in CloudEvents structured mode, for piping into other tools."""
    event: dict[str, Any] = {key.removeprefix("ce-"): value for key, value in headers.items() if key.startswith("ce-")}
    event["datacontenttype"] = headers.get("content-type", "application/json")
    try:
        event["data"] = msgspec.json.decode(data)
    except msgspec.DecodeError:
        event["data_base64"] = base64.b64encode(data).decode()
    return msgspec.json.encode(event).decode()


async def _run(args: argparse.Namespace) -> int:
    bus = await context.connect(args)
    done = asyncio.Event()
    seen = 0

    async def show(msg: Msg) -> None:
        nonlocal seen
        headers = msg.headers or {}
        if "ce-type" not in headers:
            return  # a command or reply on the same subjects, not an event
        if relayed_delivery(msg.reply):
            log.warning("skipped a message a JetStream consumer delivered to %s: not a publish", msg.subject)
            return
        print(
            structured(headers, msg.data)
            if args.output == "json"
            else format_line(msg.subject, headers, msg.data, args.width),
            flush=True,
        )
        seen += 1
        if args.count and seen >= args.count:
            done.set()

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, done.set)
    subscriptions = [await bus.nc.subscribe(args.subject, cb=show)]
    if args.subject == f"{ROOT}.>":
        subscriptions.append(await bus.nc.subscribe("gpudra.deadletter.>", cb=show))
    await bus.nc.flush()
    print(
        f"# tailing {args.subject} on {bus.nc.connected_url.geturl() if bus.nc.connected_url else ''}",
        flush=True,
    )
    try:
        await done.wait()
    finally:
        for subscription in subscriptions:
            await subscription.unsubscribe()
        await bus.close()
    return 0


def run(args: argparse.Namespace) -> int:
    return asyncio.run(_run(args))
