"""Whether a write may be admitted: every opaque config of gpudra's drivers in the object must decode. Pure.

The rule is the node's own: ``decode_parameters`` of libs/claims/configapi for the GPU driver (claim_preparation
decodes with it at prepare) and ``decode_channel_config`` for the compute-domain driver (its node agent does), so
what is admitted here is what the node accepts and the two cannot drift apart. It refuses what can be known
without the node: an unknown apiVersion or kind, an unknown or misspelt field, a wrong type, a value out of range,
a quantity that does not parse, a sharing setting the config's kind or strategy does not allow
(``timeSlicingConfig`` on a MIG device, ``mpsConfig`` with TimeSlicing), a channel config without its
``domainID``. What needs the node is left to prepare: whether a per-device MPS limit names a device of the
allocation, whether the GPU can share at all, whether a MIG profile fits, whether the domain exists.

Where the configs are, by resource (what the webhook configuration sends; anything else is admitted)::

    resourceclaims           spec.devices.config[i].opaque
    resourceclaimtemplates   spec.spec.devices.config[i].opaque
    deviceclasses            spec.config[i].opaque

Entries of other drivers are theirs to judge. On UPDATE only entries the write adds or changes are judged: an
object admitted before the webhook ran (or while it was down, with failurePolicy Ignore) must still have its
finalizers, labels and status changed by the scheduler and the controllers, and refusing those would strand it
rather than fix it. The specs of claims and templates are immutable, so for them an UPDATE is never refused.

A refusal is ``422 Invalid`` with one cause per bad entry, as the API server's own validation answers: kubectl
prints ``The ResourceClaim "train-0" is invalid: * spec.devices.config[1].opaque.parameters: GpuConfig: unknown
field sharing.mpsConfg``, and the message (which other clients show) names the object and the field too.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import msgspec

from libs.claims.configapi import DecodeProblem, decode_channel_config, decode_parameters
from services.admission.review import AdmissionRequest, AdmissionResponse, Status, StatusCause, StatusDetails

GROUP = "resource.k8s.io"
INVALID = 422


class _Opaque(msgspec.Struct, frozen=True, kw_only=True):
    driver: str
    parameters: Any = None


class _Config(msgspec.Struct, frozen=True, kw_only=True):
    """A DeviceClaimConfiguration or DeviceClassConfiguration; only ``opaque`` is read."""

    opaque: _Opaque | None = None


class _Devices(msgspec.Struct, frozen=True, kw_only=True):
    config: list[_Config] = []


class _ClaimSpec(msgspec.Struct, frozen=True, kw_only=True):
    devices: _Devices = _Devices()


class _Claim(msgspec.Struct, frozen=True, kw_only=True):
    spec: _ClaimSpec


class _TemplateSpec(msgspec.Struct, frozen=True, kw_only=True):
    spec: _ClaimSpec


class _Template(msgspec.Struct, frozen=True, kw_only=True):
    spec: _TemplateSpec


class _ClassSpec(msgspec.Struct, frozen=True, kw_only=True):
    config: list[_Config] = []


class _Class(msgspec.Struct, frozen=True, kw_only=True):
    spec: _ClassSpec


class Checked(msgspec.Struct, frozen=True, kw_only=True):
    """One kind of object the webhook checks: its Kind, where its configs are, and how to read them."""

    kind: str
    path: str
    shape: type[_Claim] | type[_Template] | type[_Class]

    def configs(self, obj: dict[str, Any]) -> list[_Config]:
        """The object's config entries; ``msgspec.ValidationError`` when it does not have the kind's shape."""
        read = msgspec.convert(obj, self.shape)
        if isinstance(read, _Claim):
            return read.spec.devices.config
        if isinstance(read, _Template):
            return read.spec.spec.devices.config
        return read.spec.config


CHECKED: dict[str, Checked] = {
    "resourceclaims": Checked(kind="ResourceClaim", path="spec.devices.config", shape=_Claim),
    "resourceclaimtemplates": Checked(kind="ResourceClaimTemplate", path="spec.spec.devices.config", shape=_Template),
    "deviceclasses": Checked(kind="DeviceClass", path="spec.config", shape=_Class),
}
"""By resource of ``resource.k8s.io`` (v1, and the other versions, which the API server converts to v1 for us)."""


Decoder = Callable[[Any], object]
"""Parameters in, a typed config out, or ``DecodeProblem``."""


def decoders(driver: str, compute_domain_driver: str = "") -> dict[str, Decoder]:
    """Whose configs are judged, each with the decoder its node uses; an empty compute-domain name: not judged."""
    judged: dict[str, Decoder] = {driver: decode_parameters}
    if compute_domain_driver:
        judged[compute_domain_driver] = decode_channel_config
    return judged


def decide(request: AdmissionRequest, judged: Mapping[str, Decoder]) -> AdmissionResponse:
    """Allowed, unless a config of a ``judged`` driver that this write brings in does not decode."""
    checked = CHECKED.get(request.resource.resource) if request.resource.group == GROUP else None
    writes = request.operation in ("CREATE", "UPDATE") and not request.sub_resource
    if checked is None or not writes or request.object is None:
        return AdmissionResponse(uid=request.uid, allowed=True)
    causes = _problems(checked, request.object, request.old_object, judged)
    if not causes:
        return AdmissionResponse(uid=request.uid, allowed=True)
    name = object_name(request)
    shown = "; ".join(f"{cause.field}: {cause.message}" for cause in causes)
    status = Status(
        status="Failure",
        code=INVALID,
        reason="Invalid",
        message=f"{describe(request)}: {shown}",
        details=StatusDetails(name=name, group=GROUP, kind=checked.kind, causes=tuple(causes)),
    )
    return AdmissionResponse(uid=request.uid, allowed=False, status=status)


def _problems(
    checked: Checked, obj: dict[str, Any], old: dict[str, Any] | None, judged: Mapping[str, Decoder]
) -> list[StatusCause]:
    try:
        configs = checked.configs(obj)
        before = checked.configs(old) if old is not None else []
    except msgspec.ValidationError as exc:
        return [StatusCause(reason="FieldValueInvalid", message=f"cannot be read: {exc}", field="spec")]
    unchanged = {msgspec.json.encode(config.opaque) for config in before if config.opaque is not None}
    causes = []
    for index, config in enumerate(configs):
        opaque = config.opaque
        decode = judged.get(opaque.driver) if opaque is not None else None
        if opaque is None or decode is None or msgspec.json.encode(opaque) in unchanged:
            continue
        try:
            decode(opaque.parameters)
        except DecodeProblem as exc:
            field = f"{checked.path}[{index}].opaque.parameters"
            causes.append(StatusCause(reason="FieldValueInvalid", message=str(exc), field=field))
    return causes


def object_name(request: AdmissionRequest) -> str:
    """The object's name; for a create with ``generateName`` whose name the API server has not made yet, the
    prefix and ``*``."""
    meta = (request.object or {}).get("metadata") or {}
    return str(meta.get("name") or request.name or f"{meta.get('generateName', '')}*")


def describe(request: AdmissionRequest) -> str:
    """``ResourceClaim default/train-0``: the kind and the name a person finds the object by."""
    checked = CHECKED.get(request.resource.resource)
    kind = checked.kind if checked else request.resource.resource
    name = object_name(request)
    return f"{kind} {request.namespace}/{name}" if request.namespace else f"{kind} {name}"
