"""How a process chooses its Kubernetes adapter: ``GPUDRA_KUBE_MODE`` and ``GPUDRA_KUBECONFIG``.

msgspec structs cannot inherit fields from two bases, so a service adds the two fields to its own settings
with the annotated types below (its flags and variables then follow from the field names)::

    class DiscoverySettings(CommonSettings, kw_only=True, frozen=True):
        kube_mode: KubeModeSetting = "auto"
        kubeconfig: KubeconfigSetting = ""

and calls ``open_kube(settings, bus.js)`` once at start, closing it at shutdown.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Annotated, Literal, Protocol

import msgspec
from nats.js import JetStreamContext

from libs.kube.errors import KubeError
from libs.kube.local import LocalKube
from libs.kube.port import KubeApi

KubeMode = Literal["auto", "cluster", "local"]
_FIXED: dict[str, Literal["cluster", "local"]] = {"cluster": "cluster", "local": "local"}

KubeModeSetting = Annotated[
    KubeMode,
    msgspec.Meta(
        description="Kubernetes API: cluster, local (the standalone store on NATS), or auto (cluster when "
        "KUBERNETES_SERVICE_HOST or a kubeconfig is set)"
    ),
]
KubeconfigSetting = Annotated[
    str, msgspec.Meta(description="kubeconfig path, or API server URL; empty: the pod's service account")
]


class KubeOptions(Protocol):
    """Any settings object with the two fields."""

    @property
    def kube_mode(self) -> str: ...

    @property
    def kubeconfig(self) -> str: ...


class KubeSettings(msgspec.Struct, kw_only=True, frozen=True):
    """The two fields alone, for code that has no settings of its own (the CLI, tests)."""

    kube_mode: KubeModeSetting = "auto"
    kubeconfig: KubeconfigSetting = ""


def resolve_mode(mode: str, kubeconfig: str, environ: Mapping[str, str]) -> Literal["cluster", "local"]:
    """``auto`` picks the cluster inside a pod or with a kubeconfig, the standalone store otherwise."""
    if mode in _FIXED:
        return _FIXED[mode]
    if mode != "auto":
        raise KubeError("settings", f"GPUDRA_KUBE_MODE={mode!r}; use cluster, local or auto")
    return "cluster" if kubeconfig or environ.get("KUBERNETES_SERVICE_HOST") else "local"


async def open_kube(
    options: KubeOptions, js: JetStreamContext | None, environ: Mapping[str, str] | None = None
) -> KubeApi:
    """The adapter the settings ask for; ``js`` (the bus's JetStream context) is needed for the local one."""
    mode = resolve_mode(options.kube_mode, options.kubeconfig, os.environ if environ is None else environ)
    if mode == "cluster":
        from libs.kube.cluster import ClusterKube  # only here: see the package's docstring

        return await ClusterKube.connect(options.kubeconfig)
    if js is None:
        raise KubeError("settings", "GPUDRA_KUBE_MODE=local needs the NATS bus, and none was given")
    return await LocalKube.open(js)
