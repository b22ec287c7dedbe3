"""GPU models the simulated backend can build machines from (gpu_models.yaml beside this file)."""

import functools
from importlib import resources

import msgspec

from libs.devices.model import MigProfile


class GpuModel(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    product_name: str
    brand: str
    architecture: str
    cuda_compute_capability: str
    memory_bytes: int
    multiprocessors: int
    mig_profiles: tuple[MigProfile, ...]


class _Catalogue(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    schema_version: int
    models: dict[str, GpuModel]


@functools.cache
def gpu_models() -> dict[str, GpuModel]:
    text = resources.files(__package__).joinpath("gpu_models.yaml").read_bytes()
    return msgspec.yaml.decode(text, type=_Catalogue).models
