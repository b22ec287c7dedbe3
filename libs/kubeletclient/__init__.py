"""Kubelet-like gRPC client for DRA plugins, for end-to-end tests and the ``gpudra kubelet`` CLI.

See ``client.py`` for what it checks and why.
"""

from libs.kubeletclient.client import (
    DEFAULT_CALL_TIMEOUT,
    DRA_V1,
    DRA_V1BETA1,
    HEALTH_V1ALPHA1,
    PLUGIN_TYPE,
    SUPPORTED_DRA_VERSIONS,
    ClaimLike,
    ClaimMismatchError,
    ClaimRef,
    DeviceHealth,
    HealthStatus,
    KubeletClient,
    KubeletClientError,
    PluginCallError,
    PluginInfo,
    PreparedDevice,
    PrepareResult,
    RegistrationError,
    UnprepareResult,
    find_registration_socket,
    get_plugin_info,
    select_version,
)

__all__ = [
    "DEFAULT_CALL_TIMEOUT",
    "DRA_V1",
    "DRA_V1BETA1",
    "HEALTH_V1ALPHA1",
    "PLUGIN_TYPE",
    "SUPPORTED_DRA_VERSIONS",
    "ClaimLike",
    "ClaimMismatchError",
    "ClaimRef",
    "DeviceHealth",
    "HealthStatus",
    "KubeletClient",
    "KubeletClientError",
    "PluginCallError",
    "PluginInfo",
    "PrepareResult",
    "PreparedDevice",
    "RegistrationError",
    "UnprepareResult",
    "find_registration_socket",
    "get_plugin_info",
    "select_version",
]
