"""Pure pieces of the CLI: event lines, supervisor backoff, the standalone layout."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from cli.endpoints import Endpoints, NoSuchNode
from cli.events import format_line, structured
from cli.supervisor import restart_delay
from cli.up import homes, layout, service_env, socket_path_problem
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
    assert "GPUDRA_CONTROLLER_ID" not in env  # one node: the settings of before --nodes
    assert list(system.nodes) == ["node-0"]
    assert system.on() == system.nodes["node-0"]
    assert homes(system, ["health"]) == {"health": ("node-0", "health")}


def test_several_nodes_each_have_their_own_sockets_state_and_identity(tmp_path: Path) -> None:
    system = layout(tmp_path, "gb", "gb200-nvl72", "nats://127.0.0.1:4222", tmp_path / "k", count=3)
    assert system.node_names() == ["gb-0", "gb-1", "gb-2"]
    assert system.kubelet == system.on("gb-0").kubelet  # the top-level fields are the first node's
    env = service_env(system, "gb-2")
    assert env["GPUDRA_NODE_NAME"] == "gb-2"
    assert env["GPUDRA_STATE_DIR"] == str(tmp_path / "nodes" / "gb-2")
    assert env["GPUDRA_KUBELET_DIR"] == str(tmp_path / "k" / "gb-2")
    assert env["GPUDRA_CDI_DIR"] == str(tmp_path / "nodes" / "gb-2" / "cdi")
    assert env["GPUDRA_CONTROLLER_ID"] == "gb-2"  # health's controller replicas must not share an identity
    assert system.on("gb-1").credentials_dir == str(tmp_path / "trust" / "users" / "gb-1")
    assert homes(system, ["health"])["health@gb-1"] == ("gb-1", "health")
    with pytest.raises(NoSuchNode, match="its nodes: gb-0, gb-1, gb-2"):
        system.on("gb-3")


def test_a_too_long_socket_path_of_any_node_is_found() -> None:
    """``/<57 d>/nodes/n-9/kubelet/plugins/gpu.gpudra.io/dra.sock`` is 107 bytes, n-10's one more."""
    state_dir = Path("/" + "d" * 57)
    assert socket_path_problem(layout(state_dir, "n", "dgx-h100", "", count=10)) == ""
    assert "/n-10/" in socket_path_problem(layout(state_dir, "n", "dgx-h100", "", count=11))


def test_an_endpoints_file_from_before_nodes_still_reads() -> None:
    old = layout(Path("/s"), "node-0", "dgx-h100", "nats://x")
    fields = msgspec.to_builtins(old)
    del fields["nodes"]
    read = msgspec.convert(fields, Endpoints)
    assert read.node_names() == ["node-0"]
    assert read.on().kubelet == old.kubelet
    assert read.on("node-0").cdi_dir == old.cdi_dir


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
