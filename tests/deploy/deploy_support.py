"""What the deploy tests share: the repository root, every service's settings struct, and what the
``gpudra bus bootstrap`` step reads."""

from __future__ import annotations

import importlib
from functools import cache
from pathlib import Path

import msgspec

from libs.bus.topology import BusLimits
from libs.settings import CommonSettings, ProcessSettings, env_name

ROOT = Path(__file__).resolve().parents[2]


@cache
def service_settings() -> dict[str, type[ProcessSettings]]:
    """``services.<name>.settings.Settings`` for every service folder."""
    found: dict[str, type[ProcessSettings]] = {}
    for path in sorted((ROOT / "services").glob("*/settings.py")):
        module = importlib.import_module(f"services.{path.parent.name}.settings")
        found[path.parent.name] = module.Settings
    return found


def on_the_bus(service: str) -> bool:
    """Whether the service connects to NATS (every one but the admission webhook, which extends ProcessSettings)."""
    return issubclass(service_settings()[service], CommonSettings)


BOOTSTRAP_SETTINGS: tuple[type[msgspec.Struct], ...] = (CommonSettings, BusLimits)
"""What ``gpudra bus bootstrap`` reads from ``GPUDRA_*`` variables: how to reach NATS, and the bus's limits."""


def bootstrap_env_names() -> frozenset[str]:
    return frozenset(env_name(f.name) for struct in BOOTSTRAP_SETTINGS for f in msgspec.structs.fields(struct))


RUNTIME_PROVIDED = (Path("/proc"), Path("/sys"), Path("/etc/hosts"))
"""Paths a container has without a volume: kernel filesystems, and the hosts file the runtime bind-mounts."""


def paths_used(settings: object, field: str) -> bool:
    """Whether the service, in its role, uses the path setting ``field`` (a controller has no node-side files)."""
    node_only: frozenset[str] = getattr(type(settings), "NODE_ONLY", frozenset())
    return not (getattr(settings, "role", "both") == "controller" and field in node_only)
