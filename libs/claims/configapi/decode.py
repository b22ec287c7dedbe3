"""Strict decoding of opaque parameters into the config API types.

The parameters arrive as arbitrary JSON from a DeviceClass or a claim; anything short of a known
``apiVersion``/``kind`` with only known fields, within the API server's 10 KiB limit, is refused with a message
naming the field (``unknown field sharing.mpsConfg``), never ignored.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Any, TypeVar

import msgspec

from libs.claims.configapi.channel import CHANNEL_KIND, ComputeDomainChannelConfig
from libs.claims.configapi.quantity import QuantityError, parse_quantity
from libs.claims.configapi.v1beta1 import (
    API_VERSION,
    KINDS,
    DeviceConfig,
    MpsConfig,
    sharing_problems,
)

T = TypeVar("T")

MAX_PARAMETERS_BYTES = 10 * 1024
"""resource.k8s.io: opaque parameters are at most 10 KiB; the standalone store does not enforce it, we do."""

_UNKNOWN = re.compile(r"^Object contains unknown field `(?P<field>[^`]+)`(?: - at `\$(?P<path>[^`]*)`)?$")
_AT = re.compile(r"^(?P<message>.*?)(?: - at `\$(?P<path>[^`]*)`)?$")


class DecodeProblem(ValueError):
    """What is wrong with the parameters, in words that name the field."""


def decode_parameters(parameters: Any) -> DeviceConfig:
    """The typed config of a device of driver ``gpu.gpudra.io``, or ``DecodeProblem``."""
    kind = _kind(parameters, KINDS)
    config: DeviceConfig = _convert(parameters, kind, KINDS[kind])
    problems = sharing_problems(config.sharing)
    if config.sharing is not None and config.sharing.mps_config is not None:
        problems += mps_problems(config.sharing.mps_config)
    if problems:
        raise DecodeProblem(f"{kind}: {'; '.join(problems)}")
    return config


def decode_channel_config(parameters: Any) -> ComputeDomainChannelConfig:
    """The typed config of an IMEX channel claim (driver ``compute-domain.gpudra.io``), or ``DecodeProblem``."""
    return _convert(parameters, _kind(parameters, (CHANNEL_KIND,)), ComputeDomainChannelConfig)


def _kind(parameters: Any, kinds: Collection[str]) -> str:
    """The kind of parameters that are a JSON object within the size limit, of this API and one of ``kinds``."""
    if not isinstance(parameters, dict):
        raise DecodeProblem(f"parameters must be a JSON object, not {type(parameters).__name__}")
    size = len(_as_json(parameters))
    if size > MAX_PARAMETERS_BYTES:
        raise DecodeProblem(f"parameters are {size} bytes, over the {MAX_PARAMETERS_BYTES}-byte limit")
    api_version, kind = parameters.get("apiVersion"), parameters.get("kind")
    if api_version != API_VERSION:
        raise DecodeProblem(f"apiVersion {api_version!r} is not supported; use {API_VERSION!r}")
    if not isinstance(kind, str) or kind not in kinds:
        raise DecodeProblem(f"kind {kind!r} is not one of {', '.join(kinds)}")
    return kind


def _convert(parameters: Any, kind: str, shape: type[T]) -> T:
    try:
        return msgspec.convert(parameters, shape, strict=True)
    except msgspec.ValidationError as exc:
        raise DecodeProblem(f"{kind}: {explain(str(exc))}") from None


def _as_json(parameters: dict[Any, Any]) -> bytes:
    """The parameters as JSON; what has no JSON form (from YAML: a null or date key, a list that contains itself
    through an alias; text that is not UTF-8) is refused here, as the API server would never have stored it."""
    try:
        return msgspec.json.encode(parameters)
    except (TypeError, ValueError, RecursionError) as exc:
        raise DecodeProblem(f"parameters are not JSON: {exc}") from None


def explain(message: str) -> str:
    """msgspec's "... - at `$.a.b`" as "a.b: ...", and an unknown field as its full path."""
    unknown = _UNKNOWN.match(message)
    if unknown:
        path = _join(unknown["path"] or "", unknown["field"])
        return f"unknown field {path}"
    located = _AT.match(message)
    if located and located["path"]:
        return f"{located['path'].lstrip('.')}: {located['message']}"
    return message


def _join(path: str, field: str) -> str:
    path = path.lstrip(".")
    return f"{path}.{field}" if path else field


def mps_problems(mps: MpsConfig) -> list[str]:
    """Quantities that do not parse; which device a per-device key names is checked against the claim later."""
    limits = {"defaultPinnedDeviceMemoryLimit": mps.default_pinned_device_memory_limit}
    per_device = mps.default_per_device_pinned_memory_limit
    limits |= {f"defaultPerDevicePinnedMemoryLimit[{key}]": value for key, value in per_device.items()}
    problems = []
    for name, value in limits.items():
        if value is None:
            continue
        try:
            parse_quantity(value)
        except QuantityError as exc:
            problems.append(f"sharing.mpsConfig.{name}: {exc}")
    return problems
