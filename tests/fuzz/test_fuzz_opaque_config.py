"""Opaque device configuration (``resource.gpudra.io/v1beta1``): any parameters, as JSON from the API server or
YAML from ``gpudra claim create --config``, decode to a config or fail with ``DecodeProblem``; a config that
decodes has MPS limits that resolve for its devices or fail with ``ConfigError``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import example, given, settings
from hypothesis import strategies as st

from cli.claims import UsageError, read_config
from libs.claims.configapi import (
    API_VERSION,
    DecodeProblem,
    DeviceConfig,
    GpuConfig,
    MigDeviceConfig,
    decode_parameters,
)
from libs.claims.configapi.quantity import MAX_QUANTITY
from services.claim_preparation.devices import FullGpu
from services.claim_preparation.errors import ConfigError
from services.claim_preparation.sharing import pinned_limits
from tests.fuzz.strategies import mostly, yaml_scalars, yaml_values

MEMBERS = [FullGpu(name="gpu-0", minor=0, uuid="GPU-0"), FullGpu(name="gpu-1", minor=1, uuid="GPU-1")]

quantities = mostly(
    st.integers(0, 2**70)
    | st.from_regex(r"\d{1,4}(\.\d{0,3})?([eE][+-]?\d{1,12}|[KMGTPE]i|[numkMGTPE])?", fullmatch=True),
    st.sampled_from(["-1Gi", "8Ei", "1e999999999", "1e" + "9" * 5000, "9" * 30]) | yaml_scalars,
)
device_keys = mostly(
    st.sampled_from(["0", "1", "GPU-0", "GPU-1"]),
    st.sampled_from(["2", "²", "٣", "0" * 30 + "1", "9" * 5000]) | st.text(max_size=4),
)
mps = st.fixed_dictionaries(
    {},
    optional={
        "defaultActiveThreadPercentage": mostly(st.integers(0, 100), st.integers(-5, 105) | yaml_scalars),
        "defaultPinnedDeviceMemoryLimit": quantities,
        "defaultPerDevicePinnedMemoryLimit": st.dictionaries(device_keys, quantities, max_size=3),
    },
)
intervals = st.sampled_from(["Default", "Short", "Medium", "Long"]) | yaml_scalars
consistent_sharing = st.fixed_dictionaries({"strategy": st.just("MPS"), "mpsConfig": mps}) | (
    st.fixed_dictionaries(
        {"strategy": st.just("TimeSlicing")},
        optional={"timeSlicingConfig": st.fixed_dictionaries({}, optional={"interval": intervals})},
    )
)
mixed_sharing = st.fixed_dictionaries(
    {"strategy": st.sampled_from(["MPS", "TimeSlicing"]) | yaml_scalars},
    optional={"mpsConfig": mps | yaml_values, "timeSlicingConfig": yaml_values, "extra": yaml_values},
)
configs = st.fixed_dictionaries(
    {
        "apiVersion": mostly(st.just(API_VERSION), yaml_values),
        "kind": mostly(st.sampled_from(["GpuConfig", "MigDeviceConfig"]), yaml_values),
        "sharing": mostly(consistent_sharing, mixed_sharing | yaml_values),
    },
)
"""Documents shaped like a config, down to the MPS limits, with any part of them odd."""
parameters = mostly(configs, yaml_values)


def applied(parameters: Any) -> DeviceConfig | None:
    """The config, with its MPS limits resolved for two GPUs; None when refused with the module's errors."""
    try:
        config = decode_parameters(parameters)
    except DecodeProblem:
        return None
    assert isinstance(config, GpuConfig | MigDeviceConfig)
    if config.sharing is not None and config.sharing.mps_config is not None:
        try:
            limits = pinned_limits(config.sharing.mps_config, MEMBERS)
        except ConfigError:
            return config
        assert all(0 <= limit <= MAX_QUANTITY for limit in limits.values())
    return config


def gpu_mps(**mps_config: Any) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": "GpuConfig", "sharing": {"strategy": "MPS", "mpsConfig": mps_config}}


@settings(max_examples=300, deadline=None)
@given(parameters=parameters)
@example({None: []}).via("found: a null key (YAML `~: x`) escaped as TypeError from the size check's JSON encode")
@example({"apiVersion": API_VERSION, "kind": []}).via("found: a list as kind escaped as TypeError (unhashable)")
@example(gpu_mps(defaultPinnedDeviceMemoryLimit="1e999999999")).via("found: decimal.Overflow escaped")
@example(gpu_mps(defaultPinnedDeviceMemoryLimit="1e" + "9" * 5000)).via("found: int()'s digit limit, ValueError")
@example(gpu_mps(defaultPerDevicePinnedMemoryLimit={"²": "1Gi"})).via(
    "found: '²'.isdigit() but int('²') fails: ValueError escaped from pinned_limits"
)
def test_parameters_decode_to_a_config_or_a_decode_problem(parameters: Any) -> None:
    applied(parameters)


texts = st.one_of(
    parameters.map(yaml.safe_dump),
    st.text(max_size=60),
    st.sampled_from(["? [a]\n: 1", "a: &x [*x]", "kind: !foo x", "a: !!binary x", "[" * 1000 + "]" * 1000]),
)
"""YAML files: documents of any shape, any text, and the corners of YAML (complex keys, recursive aliases, unknown
tags, nesting deeper than PyYAML's recursion)."""


@settings(max_examples=100, deadline=None)
@given(text=texts)
@example("a: " + "[" * 1000 + "]" * 1000).via("found: RecursionError escaped from yaml.safe_load")
@example("0: &0 [*0]").via(
    "found: a list that holds itself (YAML alias) escaped as RecursionError from the JSON encode"
)
def test_a_config_file_is_read_or_refused_as_a_usage_error(tmp_path_factory: pytest.TempPathFactory, text: str) -> None:
    path: Path = tmp_path_factory.mktemp("config") / "config.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogateescape")
    try:
        config = read_config(path, check=True)
    except UsageError:
        return
    assert applied(config) is not None
