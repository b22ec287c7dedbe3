"""Pure pieces of the CLI: event lines, supervisor backoff, the standalone layout."""

from __future__ import annotations

from pathlib import Path

from cli.events import format_line, structured
from cli.supervisor import restart_delay
from cli.up import layout, service_env
from libs.events import encode
from tests.foundation.test_catalogue import FAULT


def test_event_line_is_one_readable_line() -> None:
    headers, body = encode(FAULT, source="/gpudra/dgx-01/health", event_id="e-1")
    line = format_line("subject", headers, body)
    assert "\n" not in line
    assert "HealthEvent.v1" in line
    assert "dgx-01.example.com" in line
    assert "subject=GPU-1234" in line
    assert 'error_codes=["79"]' in line
    assert "recommended_action=RESTART_BM" in line


def test_long_events_are_whole_unless_a_width_is_asked_for() -> None:
    headers, body = encode(FAULT, source="/t")
    long_body = body.replace(b'"xid"', b'"' + b"x" * 1000 + b'"')
    assert "x" * 1000 in format_line("s", headers, long_body)
    assert len(format_line("s", headers, long_body, width=240)) == 240


def test_measurements_are_rounded_to_the_microsecond() -> None:
    from libs.events.catalogue.health import EntityRef
    from libs.events.catalogue.remediation import RemediationStepCompleted

    entity = EntityRef(kind="gpu", id="GPU-1", device="gpu-1")
    event = RemediationStepCompleted(
        node="n", entity=entity, step="gpu-reset", outcome="succeeded", duration_ms=2.1451880002132384
    )
    assert "duration_ms=2.145" in format_line("s", *encode(event, source="/t"))
    assert "2.1451880002132384" not in format_line("s", *encode(event, source="/t"))


def test_a_body_that_is_not_json_travels_as_base64() -> None:
    import base64
    import json

    headers, _ = encode(FAULT, source="/t")
    event = json.loads(structured(headers, b"\xff\x00binary"))
    assert base64.b64decode(event["data_base64"]) == b"\xff\x00binary"


def test_dead_letters_show_their_reason() -> None:
    headers, body = encode(FAULT, source="/t")
    line = format_line("gpudra.deadletter.X.y", {**headers, "gpudra-dlq-reason": "handler failed 5 times"}, body)
    assert "dead-letter='handler failed 5 times'" in line


def test_structured_mode_is_cloudevents_json() -> None:
    import json

    headers, body = encode(FAULT, source="/gpudra/n/health", event_id="e-9")
    event = json.loads(structured(headers, body))
    assert event["specversion"] == "1.0"
    assert event["id"] == "e-9"
    assert event["data"]["entity"]["id"] == "GPU-1234"


def test_restart_backoff_grows_and_is_capped() -> None:
    assert [restart_delay(n) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 4.0]
    assert restart_delay(50) == 30.0
    assert restart_delay(50, cap=2.0) == 2.0  # the nats-server: every service waits on it


def test_standalone_layout_and_environment(tmp_path: Path) -> None:
    system = layout(tmp_path, "node-0", "dgx-h100", "nats://127.0.0.1:4222")
    env = service_env(system)
    assert system.kubelet.plugins_dir == str(tmp_path / "kubelet" / "plugins" / "gpu.gpudra.io")
    assert env["GPUDRA_KUBELET_DIR"] == str(tmp_path / "kubelet")
    assert env["GPUDRA_BACKEND"] == "simulated"
    assert env["GPUDRA_NODE_NAME"] == "node-0"


def test_common_shapes_read_like_names() -> None:
    from libs.events.catalogue import ClaimPrepared, ClaimRef, PreparedDevice

    claim = ClaimRef(namespace="default", name="train-0", uid="u-1")
    device = PreparedDevice(request_names=["gpu"], pool="node-0", device="gpu-3", cdi_device_ids=["x"])
    event = ClaimPrepared(node="node-0", claim=claim, devices=[device], timings_ms={"cdi": 0.5, "total": 4.25})
    headers, body = encode(event, source="/t")
    line = format_line("s", headers, body)
    assert "claim=default/train-0" in line
    assert "devices=gpu-3" in line
    assert "timings_ms=4.2ms" in line
    assert "entity=gpu:gpu-3" in format_line("s", *encode(FAULT, source="/t"))
