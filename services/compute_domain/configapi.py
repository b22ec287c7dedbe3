"""The opaque config of a channel claim (``ComputeDomainChannelConfig``), decoded strictly at prepare.

The controller writes it into the workload claim template; a claim may carry one of its own. An unknown field
or a missing ``domainID`` is a claim error naming it, never a guess (NVIDIA's driver decodes strictly too).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from services.compute_domain.api import API_VERSION, AllocationMode


class ConfigProblem(ValueError):
    """The config cannot be used; the message names the field."""


class ComputeDomainChannelConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    api_version: Literal["resource.gpudra.io/v1beta1"] = msgspec.field(name="apiVersion")
    kind: Literal["ComputeDomainChannelConfig"]
    domain_id: Annotated[str, msgspec.Meta(min_length=1, max_length=128)] = msgspec.field(name="domainID")
    allocation_mode: AllocationMode = msgspec.field(default="Single", name="allocationMode")


def decode_channel_config(parameters: Any) -> ComputeDomainChannelConfig:
    if not isinstance(parameters, dict):
        raise ConfigProblem(f"parameters must be a JSON object, not {type(parameters).__name__}")
    if parameters.get("apiVersion") != API_VERSION:
        raise ConfigProblem(f"apiVersion {parameters.get('apiVersion')!r} is not supported; use {API_VERSION!r}")
    try:
        return msgspec.convert(parameters, ComputeDomainChannelConfig, strict=True)
    except msgspec.ValidationError as exc:
        raise ConfigProblem(str(exc)) from None
