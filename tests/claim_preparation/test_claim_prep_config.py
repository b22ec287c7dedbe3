"""The opaque config API: strict decoding, precedence between class, claim and defaults, and type fit (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from libs.claims.allocation import AllocatedClaim, AllocationResult, ConfigEntry
from libs.claims.configapi import (
    DEFAULT_GPU_CONFIG,
    DEFAULT_MIG_CONFIG,
    DecodeProblem,
    GpuConfig,
    MigDeviceConfig,
    decode_parameters,
    parse_quantity,
)
from libs.devices.model import TimeSliceInterval
from libs.events.catalogue import ClaimRef
from services.claim_preparation.devices import FullGpu, MigTarget
from services.claim_preparation.errors import ConfigError
from services.claim_preparation.precedence import choose, decoded_candidates
from tests.claim_preparation.claim_prep_support import gpu_config, mig_config

GPU = FullGpu(name="gpu-0", minor=0, uuid="GPU-0")
MIG = MigTarget(
    name="gpu-1-mig-1g10gb-19-0",
    parent_minor=1,
    parent_uuid="GPU-1",
    profile="1g.10gb",
    placement_start=0,
    dynamic=True,
)


def test_a_full_config_decodes() -> None:
    config = decode_parameters(
        gpu_config(
            strategy="MPS",
            mpsConfig={
                "defaultActiveThreadPercentage": 25,
                "defaultPinnedDeviceMemoryLimit": "1Gi",
                "defaultPerDevicePinnedMemoryLimit": {"0": 512 * 2**20},
            },
        )
    )
    assert isinstance(config, GpuConfig)
    assert config.sharing is not None
    assert config.sharing.mps_config is not None
    assert config.sharing.mps_config.default_active_thread_percentage == 25


def test_time_slicing_interval_defaults_to_default() -> None:
    config = decode_parameters(gpu_config(strategy="TimeSlicing", timeSlicingConfig={}))
    assert isinstance(config, GpuConfig)
    assert config.sharing is not None
    assert config.sharing.time_slicing_config is not None
    assert config.sharing.time_slicing_config.interval is TimeSliceInterval.DEFAULT


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        (gpu_config(strategy="MPS", mpsConfg={}), "unknown field sharing.mpsConfg"),
        ({**gpu_config(), "extra": 1}, "unknown field extra"),
        (gpu_config(strategy="TimeSlicing", timeSlicingConfig={"interval": "Forever"}), "Invalid enum value"),
        (gpu_config(strategy="Fair"), "sharing.strategy"),
        (gpu_config(strategy="MPS", mpsConfig={"defaultActiveThreadPercentage": 101}), "<= 100"),
        (gpu_config(strategy="MPS", mpsConfig={"defaultActiveThreadPercentage": "50"}), "Expected `int"),
        (gpu_config(strategy="MPS", mpsConfig={"defaultPinnedDeviceMemoryLimit": "lots"}), "not a quantity"),
        (gpu_config(strategy="MPS", mpsConfig={"defaultPinnedDeviceMemoryLimit": "-1Gi"}), "is negative"),
        (gpu_config(strategy="MPS", timeSlicingConfig={}), "timeSlicingConfig is set but sharing.strategy is MPS"),
        (gpu_config(strategy="TimeSlicing", mpsConfig={}), "mpsConfig is set but sharing.strategy is TimeSlicing"),
        (mig_config(strategy="TimeSlicing", timeSlicingConfig={}), "unknown field sharing.timeSlicingConfig"),
        ({"kind": "GpuConfig"}, "apiVersion None is not supported"),
        ({"apiVersion": "resource.gpudra.io/v1beta1", "kind": "TpuConfig"}, "kind 'TpuConfig' is not one of"),
        ("GpuConfig", "must be a JSON object"),
        ({**gpu_config(), "pad": "x" * 10240}, "over the 10240-byte limit"),
    ],
)
def test_bad_parameters_are_refused_naming_the_problem(parameters: Any, message: str) -> None:
    with pytest.raises(DecodeProblem, match=None) as caught:
        decode_parameters(parameters)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("text", "value"),
    [("10Gi", 10 * 2**30), ("512Mi", 512 * 2**20), ("1G", 10**9), ("1.5Ki", 1536), ("2e3", 2000), (7, 7), ("1m", 1)],
)
def test_quantities(text: str | int, value: int) -> None:
    assert parse_quantity(text) == value


def _claim(*entries: ConfigEntry) -> AllocatedClaim:
    return AllocatedClaim(ref=ClaimRef(namespace="ns", name="c", uid="u"), results=(), configs=entries)


def _entry(index: int, parameters: Any, source: str = "FromClaim", requests: tuple[str, ...] = ()) -> ConfigEntry:
    return ConfigEntry(index=index, source=source, requests=requests, parameters=parameters)  # type: ignore[arg-type]


def _ts(interval: str) -> dict[str, Any]:
    return gpu_config(strategy="TimeSlicing", timeSlicingConfig={"interval": interval})


RESULT = AllocationResult(request="gpu", pool="node-a", device="gpu-0")


def test_defaults_apply_when_nothing_else_does() -> None:
    candidates = decoded_candidates(_claim())
    assert choose(candidates, RESULT, GPU).config == DEFAULT_GPU_CONFIG
    assert choose(candidates, RESULT, MIG).config == DEFAULT_MIG_CONFIG


def test_claim_configs_win_over_class_configs_whatever_their_order() -> None:
    claim = _claim(_entry(0, _ts("Short")), _entry(1, _ts("Long"), source="FromClass"))
    choice = choose(decoded_candidates(claim), RESULT, GPU)
    assert choice.group == "0"


def test_later_entries_win_within_a_source() -> None:
    claim = _claim(_entry(0, _ts("Short")), _entry(1, _ts("Long")))
    assert choose(decoded_candidates(claim), RESULT, GPU).group == "1"


def test_an_entry_for_other_requests_does_not_apply() -> None:
    claim = _claim(_entry(0, _ts("Short"), requests=("gpu",)), _entry(1, _ts("Long"), requests=("other",)))
    assert choose(decoded_candidates(claim), RESULT, GPU).group == "0"


def test_a_request_entry_covers_its_subrequests() -> None:
    claim = _claim(_entry(0, _ts("Short"), requests=("gpu",)))
    sub = AllocationResult(request="gpu/big", pool="node-a", device="gpu-0")
    assert sub.request_name == "gpu"
    assert choose(decoded_candidates(claim), sub, GPU).group == "0"


def test_an_entry_for_all_requests_skips_devices_it_does_not_fit() -> None:
    claim = _claim(_entry(0, _ts("Short")), _entry(1, mig_config(strategy="MPS")))
    candidates = decoded_candidates(claim)
    assert choose(candidates, RESULT, GPU).group == "0"
    assert isinstance(choose(candidates, RESULT, MIG).config, MigDeviceConfig)


def test_an_entry_naming_a_request_must_fit_its_device() -> None:
    claim = _claim(_entry(0, _ts("Short"), requests=("gpu",)))
    with pytest.raises(ConfigError, match=r"a GpuConfig cannot apply to request gpu, whose device .* is a MIG device"):
        choose(decoded_candidates(claim), RESULT, MIG)


def test_a_broken_entry_is_an_error_even_when_it_applies_to_nothing() -> None:
    claim = _claim(_entry(3, {"kind": "GpuConfig"}, requests=("nobody",)))
    with pytest.raises(ConfigError, match=r"opaque config #3 \(FromClaim, nobody\)"):
        decoded_candidates(claim)
