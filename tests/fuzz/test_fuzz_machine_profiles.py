"""Machine profiles (``gpudra up --profile NAME|FILE``): any YAML text, any file, any name loads a profile or
fails with ``ProfileError``, never a bare KeyError, TypeError or a YAML library error."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from hypothesis import example, given, settings
from hypothesis import strategies as st

from libs.devices.errors import ProfileError
from libs.devices.simulated.catalogue import gpu_models
from libs.devices.simulated.machine import MachineProfile
from libs.devices.simulated.profiles import load_profile, parse_profile
from tests.fuzz.strategies import argv_text, mostly, yaml_scalars, yaml_values

MODELS = sorted(gpu_models())
MIG_PROFILES = sorted({profile.name for model in gpu_models().values() for profile in model.mig_profiles})

small = mostly(st.integers(0, 9), st.integers() | yaml_scalars)
mig_devices = st.lists(
    mostly(
        st.fixed_dictionaries({"gpu": small, "profile": st.sampled_from(MIG_PROFILES), "placement": small}),
        yaml_values,
    ),
    max_size=4,
)
documents = st.fixed_dictionaries(
    {"name": st.text(max_size=12), "gpu_model": mostly(st.sampled_from(MODELS), yaml_scalars)},
    optional={
        "gpu_count": mostly(st.integers(1, 8), st.integers() | yaml_scalars),
        "numa_nodes": mostly(st.integers(1, 4), st.integers() | yaml_scalars),
        "minor_numbers": st.lists(small, max_size=8),
        "mig_enabled": mostly(st.just("all") | st.lists(small, max_size=4), yaml_values),
        "mig_devices": mostly(mig_devices, yaml_values),
        "fabric": mostly(st.fixed_dictionaries({"cluster_uuid": st.text(max_size=8), "clique_id": small}), yaml_values),
        "sticky_faults": mostly(st.booleans(), yaml_scalars),
    },
)
"""Documents shaped like a profile (real GPU models and MIG profiles), with odd parts."""
texts = st.one_of(
    mostly(documents, yaml_values).map(yaml.safe_dump),
    st.text(max_size=60),
    st.sampled_from(["? [a]\n: 1", "name: &x [*x]", "gpu_count: !foo 3", "name: !!binary x", "a: 1\n---\nb: 2"]),
)


def loaded(load: Any, *args: Any) -> MachineProfile | None:
    try:
        profile = load(*args)
    except ProfileError:
        return None
    assert isinstance(profile, MachineProfile)
    return profile


@settings(max_examples=150, deadline=None)
@given(text=texts)
@example("§.\t").via("found: libyaml took it, PyYAML's composer (finding the error's line) raised ScannerError")
@example("gpu_count: " + "[" * 500 + "]" * 500).via("found: RecursionError from PyYAML finding the error's line")
def test_profile_text_loads_or_is_a_profile_error(text: str) -> None:
    loaded(parse_profile, text, "fuzz.yaml")


@settings(max_examples=50, deadline=None)
@given(content=st.binary(max_size=64) | texts.map(str.encode))
@example(b"\xff").via("found: a file that is not UTF-8 escaped as UnicodeDecodeError")
def test_a_profile_file_loads_or_is_a_profile_error(tmp_path_factory: pytest.TempPathFactory, content: bytes) -> None:
    path = tmp_path_factory.mktemp("profile") / "machine.yaml"
    path.write_bytes(content)
    loaded(load_profile, str(path))


@settings(max_examples=50, deadline=None)
@given(spec=argv_text | st.sampled_from(["dgx-h100", "/", "/proc/self/mem", "\x00"]))
@example("/proc/self/mem").via("found: a file that cannot be read (EIO) escaped as OSError")
def test_a_profile_name_loads_or_is_a_profile_error(spec: str) -> None:
    loaded(load_profile, spec)
