"""The shim's decisions as plain functions: claim checks, the answer map, error texts, health list, settings."""

from __future__ import annotations

import pytest

from libs.bus import BusError, CommandError, ServiceTimeout, ServiceUnavailable
from libs.events.catalogue import ClaimPrepareResult, ClaimRef, DeviceHealthChanged, PreparedDevice
from libs.events.catalogue.claims import uid_problem
from libs.settings import SettingsError, load_settings
from protos.gen import health_v1alpha1_pb2
from services.kubelet_shim.claims import check_claims, failure_text, merge, unexpected_uids
from services.kubelet_shim.dra import ClaimForwarder, v1_prepare_response, v1beta1_prepare_response
from services.kubelet_shim.health_stream import response
from services.kubelet_shim.health_view import DeviceKey, HealthView, devices_of
from services.kubelet_shim.settings import Settings
from tests.kubelet_shim.shim_support import inventory


def ref(uid: str, name: str | None = None) -> ClaimRef:
    return ClaimRef(namespace="default", name=name or f"claim-{uid}", uid=uid)


def error(message: str) -> ClaimPrepareResult:
    return ClaimPrepareResult(error=message)


# -- claim UIDs ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uid", "problem"),
    [
        ("", "empty"),
        ("a/b", "'/' or '..'"),
        ("..", "'/' or '..'"),
        ("x..y", "'/' or '..'"),
        ("u" * 129, "129 characters"),
        ("has space", "only letters"),
        ("-leading", "only letters"),
        ("nul\x00", "only letters"),
    ],
)
def test_unusable_uids_are_named(uid: str, problem: str) -> None:
    assert problem in (uid_problem(uid) or "")


@pytest.mark.parametrize("uid", ["0b4c6c4e-9f7a-4b1e-8d2a-3f5e6a7b8c9d", "uid-1", "A.b_c-9"])
def test_kubernetes_style_uids_are_fine(uid: str) -> None:
    assert uid_problem(uid) is None


def test_check_forwards_good_claims_once_and_refuses_conflicting_duplicates() -> None:
    checked = check_claims([ref("a"), ref("a"), ref("b", "one"), ref("b", "two"), ref("../x")], limit=10)
    assert checked.requested == ["a", "b", "../x"]
    assert checked.forward == [ref("a")]
    assert "2 times with different claims: default/one, default/two" in checked.rejected["b"]
    assert checked.rejected["../x"].startswith("claim default/claim-../x (uid '../x'): ")


def test_check_refuses_every_claim_of_an_oversized_call() -> None:
    checked = check_claims([ref(f"u{i}") for i in range(11)], limit=10)
    assert checked.forward == []
    assert len(checked.rejected) == 11
    assert "holds 11 claims, more than the 10" in checked.rejected["u0"]


# -- the answer ----------------------------------------------------------------------------------------


def test_merge_answers_exactly_the_requested_uids() -> None:
    checked = check_claims([ref("ok"), ref("missing"), ref("")], limit=10)
    results = {"ok": ClaimPrepareResult(), "stranger": ClaimPrepareResult()}
    answer = merge(checked, results, failure=None, node="node-a", make_error=error)
    assert list(answer) == ["ok", "missing", ""]
    assert answer["ok"].error == ""
    assert answer["missing"].error == (
        "claim default/claim-missing (uid 'missing'): claim_preparation on node node-a sent no result for it"
    )
    assert answer[""].error.endswith("the claim UID is empty")
    assert unexpected_uids(checked, results) == ["stranger"]


def test_merge_puts_a_request_failure_on_every_forwarded_claim_only() -> None:
    checked = check_claims([ref("a"), ref("b/c")], limit=10)
    answer = merge(checked, {}, failure="claim_preparation on node n is unreachable", node="n", make_error=error)
    assert answer["a"].error == "claim default/claim-a (uid 'a'): claim_preparation on node n is unreachable"
    assert "'/' or '..'" in answer["b/c"].error


@pytest.mark.parametrize(
    ("exc", "text"),
    [
        (ServiceUnavailable("no claims service"), "claim_preparation on node n is unreachable (not running?)"),
        (ServiceTimeout("no answer"), "claim_preparation on node n timed out after 1.5s: no answer"),
        (CommandError(409, "busy"), "claim_preparation on node n failed: busy (code 409)"),
        (BusError("too big"), "claim_preparation on node n could not be asked: too big"),
        (ConnectionError("closed"), "claim_preparation on node n could not be asked: ConnectionError('closed')"),
    ],
)
def test_failure_texts_say_what_happened_where(exc: Exception, text: str) -> None:
    assert failure_text(exc, "n", 1.5).startswith(text)


def test_request_timeout_leaves_room_inside_the_kubelet_deadline() -> None:
    forwarder = ClaimForwarder(None, node="n", timeout=40.0, max_claims=1)  # type: ignore[arg-type]
    assert forwarder.request_timeout(None) == 40.0
    assert forwarder.request_timeout(44.9) == 40.0
    assert forwarder.request_timeout(10.0) == 9.0
    assert forwarder.request_timeout(0.2) == 0.1


def test_share_id_goes_to_v1_only_and_failed_claims_carry_no_devices() -> None:
    device = PreparedDevice(request_names=["gpu"], pool="p", device="gpu-0", cdi_device_ids=["k/c=x"], share_id="s")
    answer = {"ok": ClaimPrepareResult(devices=[device]), "bad": ClaimPrepareResult(devices=[device], error="no")}
    v1 = v1_prepare_response(answer)
    beta = v1beta1_prepare_response(answer)
    assert v1.claims["ok"].devices[0].share_id == "s"
    assert list(beta.claims["ok"].devices[0].cdi_device_ids) == ["k/c=x"]
    assert list(v1.claims["bad"].devices) == []
    assert v1.claims["bad"].error == "no"
    assert list(beta.claims["bad"].devices) == []


# -- health list ---------------------------------------------------------------------------------------


def changed(device: str, health: str, reason: str = "") -> DeviceHealthChanged:
    return DeviceHealthChanged(node="node-a", pool="node-a", device=device, health=health, reason=reason)  # type: ignore[arg-type]


def test_devices_are_the_inventory_gpus_in_the_node_pool() -> None:
    assert devices_of(inventory(2)) == [DeviceKey("node-a", "gpu-0"), DeviceKey("node-a", "gpu-1")]


def test_health_view_joins_devices_and_facts_whatever_comes_first() -> None:
    view = HealthView(clock=lambda: 1000.0)
    view.apply(changed("gpu-1", "Unhealthy", "x" * 2000), at=900.0)  # before the device is known
    assert view.version == 0
    view.set_devices(devices_of(inventory(2)))
    entries = {e.device: e for e in view.snapshot()}
    assert entries["gpu-0"].health == "Healthy"
    assert entries["gpu-0"].since == 1000
    assert entries["gpu-1"].health == "Unhealthy"
    assert len(entries["gpu-1"].message) == 1024
    version = view.version
    view.apply(changed("gpu-1", "Unhealthy", "x" * 2000))
    view.set_devices(devices_of(inventory(2)))
    assert view.version == version  # nothing a stream must send
    view.apply(changed("gpu-1", "Healthy"))
    assert view.version == version + 1


def test_health_response_carries_the_timeout_and_the_enum() -> None:
    view = HealthView(clock=lambda: 5.0)
    view.set_devices([DeviceKey("node-a", "gpu-0")])
    view.apply(changed("gpu-0", "Unknown"))
    message = response(view.snapshot(), 30)
    assert message.devices[0].health == health_v1alpha1_pb2.UNKNOWN
    assert message.devices[0].health_check_timeout_seconds == 30


# -- settings ------------------------------------------------------------------------------------------


def test_socket_paths_follow_the_kubelet_conventions() -> None:
    plain = load_settings(Settings, ["--kubelet-dir", "/k", "--driver-name", "gpu.x.io"])
    assert str(plain.registration_socket) == "/k/plugins_registry/gpu.x.io-reg.sock"
    assert str(plain.dra_socket) == "/k/plugins/gpu.x.io/dra.sock"
    rolling = load_settings(Settings, ["--kubelet-dir", "/k", "--pod-uid", "abc-123", "--plugin-dir", "/p"])
    assert str(rolling.registration_socket) == "/k/plugins_registry/gpu.gpudra.io-abc-123-reg.sock"
    assert str(rolling.dra_socket) == "/p/dra-abc-123.sock"


@pytest.mark.parametrize(
    "argv",
    [["--prepare-timeout", "45"], ["--pod-uid", "../x"], ["--health-resend-seconds", "20"]],
)
def test_settings_refuse_values_the_kubelet_cannot_live_with(argv: list[str]) -> None:
    with pytest.raises(SettingsError, match=argv[0]):
        load_settings(Settings, argv)
