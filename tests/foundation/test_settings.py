"""Settings: flags beat environment beats defaults, and a bad value names its flag and variable."""

from __future__ import annotations

import pytest

from libs.bus.topology import BusLimits
from libs.settings import CommonSettings, SettingsError, load_settings
from services.discovery.settings import Settings as DiscoverySettings


def test_defaults_apply_without_input() -> None:
    settings = load_settings(CommonSettings, [], {})
    assert settings.nats_url == "nats://127.0.0.1:4222"
    assert settings.metrics_port == 0


def test_environment_then_flags() -> None:
    env = {"GPUDRA_NODE_NAME": "gpu-node-1", "GPUDRA_METRICS_PORT": "3"}
    settings = load_settings(CommonSettings, ["--metrics-port", "2"], env)
    assert (settings.node_name, settings.metrics_port) == ("gpu-node-1", 2)


def test_the_bus_limits_are_settings_too() -> None:
    limits = load_settings(BusLimits, [], {"GPUDRA_STREAM_REPLICAS": "3", "GPUDRA_STREAM_MAX_BYTES": "1048576"})
    assert (limits.stream_replicas, limits.stream_max_bytes) == (3, 1048576)
    with pytest.raises(SettingsError, match="GPUDRA_BUCKET_MAX_BYTES"):
        load_settings(BusLimits, [], {"GPUDRA_BUCKET_MAX_BYTES": "0"})


def test_service_settings_extend_the_common_ones() -> None:
    settings = load_settings(DiscoverySettings, ["--backend", "simulated"], {"GPUDRA_RESYNC_SECONDS": "30"})
    assert (settings.backend, settings.resync_seconds) == ("simulated", 30.0)


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        ([], {"GPUDRA_METRICS_PORT": "many"}, "--metrics-port / GPUDRA_METRICS_PORT"),
        (["--metrics-port", "70000"], {}, "Expected `int` <= 65535"),
        (["--node-name", "Not_A_Node"], {}, "--node-name / GPUDRA_NODE_NAME"),
        (["--log-format", "xml"], {}, "--log-format / GPUDRA_LOG_FORMAT"),
    ],
)
def test_bad_values_name_flag_and_variable(argv: list[str], env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message.replace("(", r"\(")):
        load_settings(CommonSettings, argv, env)


def test_bad_backend_is_refused_with_choices() -> None:
    with pytest.raises(SettingsError, match=r"--backend / GPUDRA_BACKEND.*\(one of: 'nvml', 'simulated'\)"):
        load_settings(DiscoverySettings, ["--backend", "cuda"], {})
