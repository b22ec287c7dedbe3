"""Opening the Kubernetes API discovery needs, and checking its version, with ``StartupError`` on failure.

A kubeconfig that does not load or an API server too old for ``resource.k8s.io/v1`` is not retried in a loop:
see libs/runtime/startup.py for the exit codes (4 here) and libs/runtime/devices.py for the device backend.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from kubernetes_asyncio.client import ApiClient, VersionApi

from libs.bus import Bus
from libs.kube import KubeApi, KubeError, open_kube, resolve_mode
from libs.kube.cluster import load_configuration
from libs.runtime.startup import EXIT_KUBE, StartupError
from libs.slices.limits import OLDEST_MINOR
from services.discovery.settings import STANDALONE_KUBE_MINOR, Settings

_MINOR = re.compile(r"^(\d+)")


@dataclass(frozen=True)
class Kubernetes:
    """The API (cluster or standalone store) and the version the slices are laid out for."""

    api: KubeApi
    mode: Literal["cluster", "local"]
    minor: int


async def open_kubernetes(settings: Settings, bus: Bus, environ: Mapping[str, str] | None = None) -> Kubernetes:
    env = os.environ if environ is None else environ
    try:
        mode = resolve_mode(settings.kube_mode, settings.kubeconfig, env)
        api = await open_kube(settings, bus.js, env)
    except KubeError as exc:
        raise StartupError(EXIT_KUBE, str(exc)) from exc
    try:
        minor = settings.kube_minor or (STANDALONE_KUBE_MINOR if mode == "local" else await server_minor(settings))
        check_minor(minor)
    except StartupError:
        await api.close()
        raise
    return Kubernetes(api=api, mode=mode, minor=minor)


def check_minor(minor: int) -> None:
    if minor < OLDEST_MINOR:
        raise StartupError(
            EXIT_KUBE,
            f"Kubernetes 1.{minor} has no resource.k8s.io/v1 ResourceSlices; gpudra needs 1.{OLDEST_MINOR} or newer "
            "(setting --kube-minor / GPUDRA_KUBE_MINOR)",
        )


def minor_of(version: Mapping[str, Any]) -> int:
    """The minor number of a ``/version`` answer; managed clusters say ``"34+"``, some only ``gitVersion``."""
    minor = _MINOR.match(str(version.get("minor") or ""))
    if minor is None:
        parts = str(version.get("gitVersion") or "").lstrip("v").split(".")
        minor = _MINOR.match(parts[1]) if len(parts) > 1 else None
    if minor is None:
        raise ValueError(f"no minor version in {dict(version)}")
    return int(minor.group(1))


async def server_minor(settings: Settings) -> int:
    """Asks the API server's ``/version`` (which every authenticated client may read).

    TODO(kube): move to the Kubernetes port (``KubeApi.server_version``) so it shares the port's client.
    """
    try:
        async with ApiClient(configuration=await load_configuration(settings.kubeconfig)) as client:
            info = await VersionApi(client).get_code()
        return minor_of({"minor": info.minor, "gitVersion": info.git_version})
    except Exception as exc:
        raise StartupError(
            EXIT_KUBE,
            f"cannot read the Kubernetes version from the API server ({exc}); "
            "set --kube-minor / GPUDRA_KUBE_MINOR (e.g. 34) to skip asking",
        ) from exc
