"""Generate ``docs/asyncapi.yaml`` and ``docs/events.schema.json`` from the catalogue, so docs cannot drift.

``python -m libs.events.asyncapi`` rewrites both; ``--check`` exits 1 when a committed one is stale (the test
suite runs it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import msgspec
import yaml

from libs.events.base import Command, Event
from libs.events.registry import COMMANDS, EVENTS
from libs.events.subjects import DEADLETTER_ROOT, ROOT
from libs.version import VERSION

DOCS = Path(__file__).resolve().parents[2] / "docs"
REF_TEMPLATE = "#/components/schemas/{name}"

CE_HEADERS: dict[str, Any] = {
    "type": "object",
    "description": "CloudEvents 1.0 attributes in NATS headers (binary content mode).",
    "required": ["ce-specversion", "ce-id", "ce-source", "ce-type", "ce-time", "Nats-Msg-Id"],
    "properties": {
        "ce-specversion": {"type": "string", "const": "1.0"},
        "ce-id": {"type": "string", "description": "unique event id; also the JetStream de-duplication id"},
        "ce-source": {"type": "string", "description": "/gpudra/<node>/<service>"},
        "ce-type": {"type": "string", "description": "io.gpudra.<EventName>.v<version>"},
        "ce-time": {"type": "string", "format": "date-time"},
        "ce-subject": {"type": "string", "description": "what the event is about: claim uid, device..."},
        "content-type": {"type": "string", "const": "application/json"},
        "Nats-Msg-Id": {"type": "string", "description": "equals ce-id"},
        "traceparent": {"type": "string", "description": "W3C trace context of the producer"},
        "tracestate": {"type": "string"},
    },
}


def _node_parameter() -> dict[str, Any]:
    return {"description": "Kubernetes node name with '.' replaced by '_' (or _cluster for cluster-wide facts)."}


def _event_parts(cls: type[Event]) -> tuple[str, dict[str, Any], dict[str, Any]]:
    key = cls.__name__
    channel = {
        "address": f"{ROOT}.{{node}}.{cls.domain}.{cls.topic}",
        "title": key,
        "messages": {key: {"$ref": f"#/components/messages/{key}"}},
        "parameters": {"node": _node_parameter()},
    }
    operation = {
        "action": "receive",
        "summary": cls.summary,
        "channel": {"$ref": f"#/channels/{key}"},
        "messages": [{"$ref": f"#/channels/{key}/messages/{key}"}],
    }
    return key, channel, operation


def _command_parts(cls: type[Command]) -> tuple[str, dict[str, Any], dict[str, Any]]:
    key = cls.__name__
    reply = cls.reply.__name__
    channel = {
        "address": f"{ROOT}.{{node}}.rpc.{cls.service}.{cls.endpoint}",
        "title": key,
        "messages": {
            key: {"$ref": f"#/components/messages/{key}"},
            reply: {"$ref": f"#/components/messages/{reply}"},
        },
        "parameters": {"node": _node_parameter()},
    }
    operation = {
        "action": "send",
        "summary": cls.summary,
        "channel": {"$ref": f"#/channels/{key}"},
        "messages": [{"$ref": f"#/channels/{key}/messages/{key}"}],
        "reply": {"messages": [{"$ref": f"#/channels/{key}/messages/{reply}"}]},
    }
    return key, channel, operation


def _message(cls: type[msgspec.Struct], summary: str, headers: bool) -> dict[str, Any]:
    message: dict[str, Any] = {
        "name": cls.__name__,
        "summary": summary,
        "contentType": "application/json",
        "payload": {"$ref": REF_TEMPLATE.format(name=cls.__name__)},
    }
    if isinstance(cls, type) and issubclass(cls, Event):
        message["title"] = cls.ce_type()
    if headers:
        message["headers"] = {"$ref": "#/components/schemas/CloudEventHeaders"}
    return message


def document() -> dict[str, Any]:
    events = sorted(EVENTS.values(), key=lambda cls: (cls.domain, cls.__name__))
    commands = sorted(COMMANDS, key=lambda cls: (cls.service, cls.__name__))
    types: list[type[msgspec.Struct]] = [*events, *commands, *(cls.reply for cls in commands)]
    _, schemas = msgspec.json.schema_components(types, ref_template=REF_TEMPLATE)
    schemas["CloudEventHeaders"] = CE_HEADERS
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for event in events:
        key, channels[key], operations[f"on{key}"] = _event_parts(event)
        messages[key] = _message(event, event.summary, headers=True)
    for command in commands:
        key, channels[key], operations[key] = _command_parts(command)
        messages[key] = _message(command, command.summary, headers=False)
        messages[command.reply.__name__] = _message(command.reply, f"Reply to {key}", headers=False)
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "gpudra events and commands",
            "version": VERSION,
            "description": (
                "Every fact gpudra services publish (JetStream, CloudEvents 1.0 binary mode) and every "
                f"command they serve (NATS request/reply on nats.micro). Dead letters go to {DEADLETTER_ROOT}."
                "<stream>.<consumer> with the original headers plus gpudra-dlq-* headers. Generated from "
                "libs/events by `python -m libs.events.asyncapi`; do not edit by hand."
            ),
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": schemas},
    }


def json_schema() -> dict[str, Any]:
    """One JSON Schema (2020-12) document with every event's data, keyed by CloudEvents type."""
    events = sorted(EVENTS.items())
    _, defs = msgspec.json.schema_components([cls for _, cls in events], ref_template="#/$defs/{name}")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://gpudra.io/schemas/events.schema.json",
        "title": "gpudra event data, by CloudEvents type (ce-type header)",
        "oneOf": [{"$ref": f"#/$defs/{cls.__name__}"} for _, cls in events],
        "x-ce-types": {ce_type: f"#/$defs/{cls.__name__}" for ce_type, cls in events},
        "$defs": defs,
    }


def rendered() -> dict[str, str]:
    """File name under docs/ → its generated content."""
    return {
        "asyncapi.yaml": yaml.safe_dump(document(), sort_keys=False, width=110, allow_unicode=True),
        "events.schema.json": msgspec.json.format(msgspec.json.encode(json_schema())).decode() + "\n",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m libs.events.asyncapi", description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail when a committed document is stale")
    parser.add_argument("--docs", type=Path, default=DOCS, help="directory of the documents")
    args = parser.parse_args(argv)
    stale = []
    for name, text in rendered().items():
        path = args.docs / name
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path))
            continue
        path.write_text(text)
        print(f"wrote {path}")
    if stale:
        print(f"stale: {', '.join(stale)}; run `python -m libs.events.asyncapi`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
