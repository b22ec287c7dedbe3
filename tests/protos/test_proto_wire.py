"""Wire compatibility of the project's .proto files with what the kubelet sends.

The tables below are copied by hand from shared/facts/kubelet-dra-api.md, independently of the
.proto files, so a wrong package, name, number or type in protos/proto/ fails here instead of
silently garbling a real kubelet's requests.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any, cast

import pytest
from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor, FileDescriptor
from google.protobuf.unknown_fields import UnknownFieldSet

from protos.gen import (
    dra_v1_pb2,
    dra_v1_pb2_grpc,
    dra_v1beta1_pb2,
    dra_v1beta1_pb2_grpc,
    health_v1alpha1_pb2,
    health_v1alpha1_pb2_grpc,
    pluginregistration_pb2,
    pluginregistration_pb2_grpc,
)

STR = FieldDescriptor.TYPE_STRING
MSG = FieldDescriptor.TYPE_MESSAGE
BOOL = FieldDescriptor.TYPE_BOOL
I64 = FieldDescriptor.TYPE_INT64
ENUM = FieldDescriptor.TYPE_ENUM

# (field name, number, type, repeated, referenced message/enum short name or None)
Field = tuple[str, int, int, bool, str | None]

DRA_COMMON: dict[str, list[Field]] = {
    "NodePrepareResourcesRequest": [("claims", 1, MSG, True, "Claim")],
    "NodePrepareResourcesResponse": [("claims", 1, MSG, True, "ClaimsEntry")],
    "NodePrepareResourceResponse": [("devices", 1, MSG, True, "Device"), ("error", 2, STR, False, None)],
    "NodeUnprepareResourcesRequest": [("claims", 1, MSG, True, "Claim")],
    "NodeUnprepareResourcesResponse": [("claims", 1, MSG, True, "ClaimsEntry")],
    "NodeUnprepareResourceResponse": [("error", 1, STR, False, None)],
    "Claim": [
        ("namespace", 1, STR, False, None),
        ("uid", 2, STR, False, None),
        ("name", 3, STR, False, None),
    ],
}
DEVICE_V1BETA1: list[Field] = [
    ("request_names", 1, STR, True, None),
    ("pool_name", 2, STR, False, None),
    ("device_name", 3, STR, False, None),
    ("cdi_device_ids", 4, STR, True, None),
]
DEVICE_V1: list[Field] = [*DEVICE_V1BETA1, ("share_id", 5, STR, False, None)]

REGISTRATION: dict[str, list[Field]] = {
    "InfoRequest": [],
    "PluginInfo": [
        ("type", 1, STR, False, None),
        ("name", 2, STR, False, None),
        ("endpoint", 3, STR, False, None),
        ("supported_versions", 4, STR, True, None),
    ],
    "RegistrationStatus": [("plugin_registered", 1, BOOL, False, None), ("error", 2, STR, False, None)],
    "RegistrationStatusResponse": [],
}

HEALTH: dict[str, list[Field]] = {
    "NodeWatchResourcesRequest": [],
    "NodeWatchResourcesResponse": [("devices", 1, MSG, True, "DeviceHealth")],
    "DeviceHealth": [
        ("device", 1, MSG, False, "DeviceIdentifier"),
        ("health", 2, ENUM, False, "HealthStatus"),
        ("last_updated_time", 3, I64, False, None),
        ("health_check_timeout_seconds", 4, I64, False, None),
        ("message", 5, STR, False, None),
    ],
    "DeviceIdentifier": [("pool_name", 1, STR, False, None), ("device_name", 2, STR, False, None)],
}

CASES: list[tuple[str, ModuleType, str, dict[str, list[Field]]]] = [
    ("dra-v1", dra_v1_pb2, "k8s.io.kubelet.pkg.apis.dra.v1", {**DRA_COMMON, "Device": DEVICE_V1}),
    (
        "dra-v1beta1",
        dra_v1beta1_pb2,
        "k8s.io.kubelet.pkg.apis.dra.v1beta1",
        {**DRA_COMMON, "Device": DEVICE_V1BETA1},
    ),
    ("registration", pluginregistration_pb2, "pluginregistration", REGISTRATION),
    ("health", health_v1alpha1_pb2, "v1alpha1", HEALTH),
]


def _is_repeated(field: FieldDescriptor) -> bool:
    # protobuf 7 dropped FieldDescriptor.label in favour of is_repeated; accept either.
    repeated = getattr(field, "is_repeated", None)
    if repeated is None:
        return bool(getattr(field, "label") == FieldDescriptor.LABEL_REPEATED)  # noqa: B009
    return bool(repeated)


def _syntax(file: FileDescriptor) -> str:
    proto = descriptor_pb2.FileDescriptorProto()
    file.CopyToProto(proto)
    return proto.syntax


@pytest.mark.parametrize(("module", "package", "messages"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_messages_match_the_facts(module: ModuleType, package: str, messages: dict[str, list[Field]]) -> None:
    file: FileDescriptor = module.DESCRIPTOR
    assert file.package == package
    assert _syntax(file) == "proto3"  # proto3 defaults: unset scalars are omitted on the wire
    assert set(file.message_types_by_name) == set(messages), "messages differ from the facts"
    for msg_name, fields in messages.items():
        desc: Descriptor = file.message_types_by_name[msg_name]
        assert desc.full_name == f"{package}.{msg_name}"
        assert set(desc.fields_by_name) == {f[0] for f in fields}, f"{msg_name}: fields differ"
        for name, number, ftype, repeated, ref in fields:
            field = desc.fields_by_name[name]
            where = f"{msg_name}.{name}"
            assert field.number == number, where
            assert field.type == ftype, where
            assert _is_repeated(field) == repeated, where
            if ref is not None:
                target = field.message_type or field.enum_type
                assert target is not None, where
                assert target.name == ref, where


@pytest.mark.parametrize("module", [dra_v1_pb2, dra_v1beta1_pb2], ids=["v1", "v1beta1"])
def test_claim_maps_are_keyed_by_string(module: ModuleType) -> None:
    for msg_name, value_type in [
        ("NodePrepareResourcesResponse", "NodePrepareResourceResponse"),
        ("NodeUnprepareResourcesResponse", "NodeUnprepareResourceResponse"),
    ]:
        entry = module.DESCRIPTOR.message_types_by_name[msg_name].fields_by_name["claims"].message_type
        assert entry.GetOptions().map_entry, msg_name
        assert entry.fields_by_name["key"].type == STR
        assert entry.fields_by_name["value"].message_type.name == value_type


def test_share_id_is_optional_with_presence() -> None:
    """v1's share_id is `optional`: unset and "" must be distinguishable (kubelet 1.35+)."""
    device = dra_v1_pb2.Device()
    assert not device.HasField("share_id")
    device.share_id = ""
    assert device.HasField("share_id")
    assert dra_v1_pb2.Device.DESCRIPTOR.fields_by_name["share_id"].has_presence


def test_health_status_enum_values() -> None:
    enum = health_v1alpha1_pb2.DESCRIPTOR.enum_types_by_name["HealthStatus"]
    assert enum.full_name == "v1alpha1.HealthStatus"
    assert {v.name: v.number for v in enum.values} == {"UNKNOWN": 0, "HEALTHY": 1, "UNHEALTHY": 2}


DRA_METHODS = {
    "NodePrepareResources": ("NodePrepareResourcesRequest", "NodePrepareResourcesResponse", False),
    "NodeUnprepareResources": ("NodeUnprepareResourcesRequest", "NodeUnprepareResourcesResponse", False),
}

SERVICES: list[tuple[ModuleType, ModuleType, str, str, dict[str, tuple[str, str, bool]]]] = [
    (
        dra_v1_pb2,
        dra_v1_pb2_grpc,
        "DRAPlugin",
        "/k8s.io.kubelet.pkg.apis.dra.v1.DRAPlugin/",
        DRA_METHODS,
    ),
    (
        dra_v1beta1_pb2,
        dra_v1beta1_pb2_grpc,
        "DRAPlugin",
        "/k8s.io.kubelet.pkg.apis.dra.v1beta1.DRAPlugin/",
        DRA_METHODS,
    ),
    (
        pluginregistration_pb2,
        pluginregistration_pb2_grpc,
        "Registration",
        "/pluginregistration.Registration/",
        {
            "GetInfo": ("InfoRequest", "PluginInfo", False),
            "NotifyRegistrationStatus": ("RegistrationStatus", "RegistrationStatusResponse", False),
        },
    ),
    (
        health_v1alpha1_pb2,
        health_v1alpha1_pb2_grpc,
        "DRAResourceHealth",
        "/v1alpha1.DRAResourceHealth/",
        {"NodeWatchResources": ("NodeWatchResourcesRequest", "NodeWatchResourcesResponse", True)},
    ),
]


class _RecordingChannel:
    """Stands in for a grpc channel to capture the method paths a generated stub binds."""

    def __init__(self) -> None:
        self.paths: dict[str, str] = {}

    def _record(self, kind: str) -> Any:
        def bind(path: str, *args: object, **kwargs: object) -> str:
            self.paths[path] = kind
            return path

        return bind

    def __getattr__(self, kind: str) -> Any:
        return self._record(kind)


@pytest.mark.parametrize(
    ("pb2", "grpc_mod", "service", "prefix", "methods"),
    SERVICES,
    ids=["dra-v1", "dra-v1beta1", "registration", "health"],
)
def test_method_paths(
    pb2: ModuleType,
    grpc_mod: ModuleType,
    service: str,
    prefix: str,
    methods: dict[str, tuple[str, str, bool]],
) -> None:
    desc = pb2.DESCRIPTOR.services_by_name[service]
    assert set(desc.methods_by_name) == set(methods)
    for name, (req, resp, server_streaming) in methods.items():
        method = desc.methods_by_name[name]
        assert f"/{desc.full_name}/{method.name}" == prefix + name
        assert method.input_type.name == req
        assert method.output_type.name == resp
        assert method.server_streaming == server_streaming
        assert not method.client_streaming
    # The generated client stub must call exactly these paths.
    channel = _RecordingChannel()
    getattr(grpc_mod, f"{service}Stub")(cast(Any, channel))
    expected_kind = {prefix + n: ("unary_stream" if m[2] else "unary_unary") for n, m in methods.items()}
    assert channel.paths == expected_kind


# A NodePrepareResourcesRequest with one Claim{namespace="ns-a", uid="uid-1", name="claim-x"},
# encoded by hand: tag = (field number << 3) | wire type 2 (length-delimited).
CLAIM_BYTES = b"\x0a\x04ns-a" + b"\x12\x05uid-1" + b"\x1a\x07claim-x"
PREPARE_REQUEST_BYTES = b"\x0a" + bytes([len(CLAIM_BYTES)]) + CLAIM_BYTES


@pytest.mark.parametrize("module", [dra_v1_pb2, dra_v1beta1_pb2], ids=["v1", "v1beta1"])
def test_hand_encoded_prepare_request_decodes(module: ModuleType) -> None:
    request = module.NodePrepareResourcesRequest.FromString(PREPARE_REQUEST_BYTES)
    assert len(request.claims) == 1
    claim = request.claims[0]
    assert (claim.namespace, claim.uid, claim.name) == ("ns-a", "uid-1", "claim-x")
    assert len(UnknownFieldSet(request.claims[0])) == 0
    # And our encoder produces the same bytes the kubelet would.
    built = module.NodePrepareResourcesRequest(claims=[module.Claim(namespace="ns-a", uid="uid-1", name="claim-x")])
    assert built.SerializeToString() == PREPARE_REQUEST_BYTES


def _ld(field: int, payload: bytes) -> bytes:
    """A length-delimited field (payload shorter than 128 bytes)."""
    assert len(payload) < 128
    return bytes([(field << 3) | 2, len(payload)]) + payload


DEVICE_BYTES = (
    _ld(1, b"gpu")
    + _ld(2, b"node-a")
    + _ld(3, b"gpu-0")
    + _ld(4, b"k8s.gpu.example.com/gpu=uuid-0")
    + _ld(5, b"share-1")
)
PREPARE_RESPONSE_BYTES = _ld(1, _ld(1, b"uid-1") + _ld(2, _ld(1, DEVICE_BYTES)))


def test_hand_encoded_prepare_response_v1() -> None:
    response = dra_v1_pb2.NodePrepareResourcesResponse.FromString(PREPARE_RESPONSE_BYTES)
    assert list(response.claims) == ["uid-1"]
    result = response.claims["uid-1"]
    assert result.error == ""
    (device,) = result.devices
    assert list(device.request_names) == ["gpu"]
    assert (device.pool_name, device.device_name) == ("node-a", "gpu-0")
    assert list(device.cdi_device_ids) == ["k8s.gpu.example.com/gpu=uuid-0"]
    assert device.HasField("share_id")
    assert device.share_id == "share-1"


def test_v1beta1_has_no_share_id_on_the_wire() -> None:
    """A v1 answer read as v1beta1 keeps fields 1-4 and leaves field 5 unknown."""
    response = dra_v1beta1_pb2.NodePrepareResourcesResponse.FromString(PREPARE_RESPONSE_BYTES)
    (device,) = response.claims["uid-1"].devices
    assert device.device_name == "gpu-0"
    assert "share_id" not in dra_v1beta1_pb2.Device.DESCRIPTOR.fields_by_name
    unknown = UnknownFieldSet(device)
    assert len(unknown) == 1
    assert (unknown[0].field_number, unknown[0].data) == (5, b"share-1")


def test_hand_encoded_error_and_unprepare() -> None:
    prepare = dra_v1_pb2.NodePrepareResourcesResponse.FromString(
        _ld(1, _ld(1, b"uid-2") + _ld(2, _ld(2, b"no such device")))
    )
    assert prepare.claims["uid-2"].error == "no such device"
    unprepare = dra_v1_pb2.NodeUnprepareResourcesResponse.FromString(_ld(1, _ld(1, b"uid-3") + _ld(2, _ld(1, b"busy"))))
    assert unprepare.claims["uid-3"].error == "busy"


def test_hand_encoded_registration() -> None:
    info = pluginregistration_pb2.PluginInfo.FromString(
        _ld(1, b"DRAPlugin")
        + _ld(2, b"gpu.example.com")
        + _ld(3, b"/var/lib/kubelet/plugins/gpu.example.com/dra.sock")
        + _ld(4, b"v1.DRAPlugin")
        + _ld(4, b"v1beta1.DRAPlugin")
    )
    assert info.type == "DRAPlugin"
    assert info.name == "gpu.example.com"
    assert info.endpoint.endswith("/dra.sock")
    assert list(info.supported_versions) == ["v1.DRAPlugin", "v1beta1.DRAPlugin"]
    status = pluginregistration_pb2.RegistrationStatus.FromString(b"\x08\x01" + _ld(2, b"oops"))
    assert status.plugin_registered
    assert status.error == "oops"


def test_hand_encoded_health() -> None:
    entry = (
        _ld(1, _ld(1, b"node-a") + _ld(2, b"gpu-3"))
        + b"\x10\x02"  # health = UNHEALTHY (varint, field 2)
        + b"\x18\xe8\x07"  # last_updated_time = 1000 (varint, field 3)
        + b"\x20\x1e"  # health_check_timeout_seconds = 30 (varint, field 4)
        + _ld(5, b"XID 79")
    )
    response = health_v1alpha1_pb2.NodeWatchResourcesResponse.FromString(_ld(1, entry))
    (device,) = response.devices
    assert (device.device.pool_name, device.device.device_name) == ("node-a", "gpu-3")
    assert device.health == health_v1alpha1_pb2.UNHEALTHY
    assert device.last_updated_time == 1000
    assert device.health_check_timeout_seconds == 30
    assert device.message == "XID 79"
