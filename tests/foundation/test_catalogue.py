"""The catalogue: subjects, CloudEvents envelopes, and the generated documents."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys

import msgspec
import pytest

from libs.events import CLUSTER, COMMANDS, EVENTS, MalformedEvent, UnknownEventType, decode, encode, event_subject
from libs.events.asyncapi import document, json_schema, rendered
from libs.events.catalogue import EntityRef, HealthEvent, ServiceCrashed
from libs.events.subjects import node_from_token, node_token

FAULT = HealthEvent(
    node="dgx-01.example.com",
    check="xid",
    component="gpu",
    entity=EntityRef(kind="gpu", id="GPU-1234", device="gpu-3"),
    error_codes=["79"],
    fatal=True,
    recommended_action="RESTART_BM",
    detected_at=dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC),
)


def test_every_event_has_a_distinct_subject_and_type() -> None:
    subjects = {event_subject("n", cls.domain, cls.topic) for cls in EVENTS.values()}
    assert len(subjects) == len(EVENTS) >= 15
    assert all(ce_type.startswith("io.gpudra.") and ce_type.endswith(".v1") for ce_type in EVENTS)


def test_commands_have_replies_and_rpc_endpoints() -> None:
    assert {cls.__name__ for cls in COMMANDS} >= {"PrepareClaims", "UnprepareClaims", "ResetGpu", "InjectFault"}
    assert all(cls.reply.__name__ == cls.__name__ + "Reply" for cls in COMMANDS)


def test_node_tokens_round_trip_and_cluster_is_special() -> None:
    assert node_token("dgx-01.example.com") == "dgx-01_example_com"
    assert node_from_token("dgx-01_example_com") == "dgx-01.example.com"
    assert event_subject(CLUSTER, "remediation", "breaker") == "gpudra.v1._cluster.remediation.breaker"


def test_envelope_round_trip() -> None:
    headers, body = encode(FAULT, source="/gpudra/dgx-01/health", event_id="e-1")
    envelope = decode(headers, body)
    assert envelope.data == FAULT
    assert (envelope.id, envelope.subject, envelope.type) == ("e-1", "GPU-1234", "io.gpudra.HealthEvent.v1")


def test_receivers_ignore_fields_added_later() -> None:
    headers, body = encode(
        ServiceCrashed(node="n", service="s", exit_code=1, restarts=1, restart_in_seconds=1), source="/t"
    )
    newer = body[:-1] + b',"added_in_a_later_release":true}'
    assert decode(headers, newer).data.ce_subject() == "s"


def test_unknown_type_and_missing_headers_are_named() -> None:
    headers, body = encode(FAULT, source="/t", event_id="e-2")
    with pytest.raises(UnknownEventType, match=r"unknown event type 'io.gpudra.Other.v9' \(id e-2\)"):
        decode({**headers, "ce-type": "io.gpudra.Other.v9"}, body)
    with pytest.raises(MalformedEvent, match="missing header"):
        decode({}, body)
    with pytest.raises(MalformedEvent, match=r"unsupported CloudEvents specversion '0\.3'"):
        decode({**headers, "ce-specversion": "0.3"}, body)


def test_invalid_enum_value_is_malformed() -> None:
    headers, body = encode(FAULT, source="/t", event_id="e-3")
    bad = body.replace(b"RESTART_BM", b"REINSTALL_OS")
    with pytest.raises(MalformedEvent, match="recommended_action"):
        decode(headers, bad)


def test_asyncapi_lists_every_event_and_command() -> None:
    doc = document()
    assert doc["asyncapi"] == "3.0.0"
    assert set(doc["channels"]) == {cls.__name__ for cls in EVENTS.values()} | {cls.__name__ for cls in COMMANDS}
    assert doc["channels"]["HealthEvent"]["address"] == "gpudra.v1.{node}.health.events"
    assert doc["operations"]["PrepareClaims"]["reply"]["messages"]
    schema = json_schema()
    assert set(schema["x-ce-types"]) == set(EVENTS)


def test_json_schema_accepts_real_events() -> None:
    import jsonschema

    schema = json_schema()
    jsonschema.validate(msgspec.to_builtins(FAULT), {**schema, "oneOf": [{"$ref": "#/$defs/HealthEvent"}]})
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"node": "n"}, {**schema, "oneOf": [{"$ref": "#/$defs/HealthEvent"}]})


def test_committed_documents_are_fresh() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "libs.events.asyncapi", "--check"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr + " — run `python -m libs.events.asyncapi`"
    assert set(rendered()) == {"asyncapi.yaml", "events.schema.json"}
