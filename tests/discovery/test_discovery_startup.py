"""Settings that cannot work end discovery with one clear line and an exit code of their own, never a traceback
or a hot loop: a broken profile file, NVML on a machine without the driver, an unusable Kubernetes config."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pynvml
import pytest

from libs.bus import Bus
from libs.natsserver import EmbeddedNats
from libs.runtime.devices import open_devices
from libs.runtime.startup import EXIT_DEVICES, EXIT_KUBE, StartupError
from services.discovery.startup import open_kubernetes
from tests.discovery.discovery_support import discovery_settings
from tests.support.nats_fixture import service_env

BAD_PROFILE = """\
name: lab
gpu_model: H100-SXM5-80GB
gpu_count: 2
mig_enabled: [0]
mig_devices:
  - {gpu: 0, profile: 4g.40gb, placement: 4}
"""


def nvml_present() -> bool:
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return False
    pynvml.nvmlShutdown()
    return True


async def run_discovery(env: dict[str, str]) -> tuple[int, list[str]]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.discovery",
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode or 0, out.decode().splitlines()


async def test_a_bad_profile_file_exits_with_one_line_naming_file_line_and_setting(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    profile = tmp_path / "lab.yaml"
    profile.write_text(BAD_PROFILE)
    code, lines = await run_discovery(
        {
            **service_env(nats_server.url, "node-a", "discovery"),
            "GPUDRA_BACKEND": "simulated",
            "GPUDRA_PROFILE": str(profile),
            "GPUDRA_STATE_DIR": str(tmp_path / "state"),
            "GPUDRA_METRICS_PORT": "-1",
            "GPUDRA_KUBE_MODE": "local",
        }
    )
    assert code == EXIT_DEVICES
    assert not [line for line in lines if "Traceback" in line]
    last = json.loads(lines[-1])
    assert last["level"] == "ERROR"
    assert last["exit_code"] == EXIT_DEVICES
    assert f"machine profile {profile}: line 6" in last["msg"]
    assert "profile 4g.40gb cannot start at slice 4" in last["msg"]
    assert "GPUDRA_PROFILE" in last["msg"]
    assert not (tmp_path / "state" / "simulated" / "state.json").exists()


@pytest.mark.skipif(nvml_present(), reason="this machine has the NVIDIA driver")
async def test_nvml_missing_says_which_backend_to_use(nats_server: EmbeddedNats, tmp_path: Path) -> None:
    with pytest.raises(StartupError) as caught:
        await open_devices(discovery_settings(nats_server.url, tmp_path, backend="nvml"))
    assert caught.value.exit_code == EXIT_DEVICES
    message = str(caught.value)
    assert message.startswith("node node-a: nvml backend: NVML cannot start")
    assert "use `--backend simulated` on a machine without NVIDIA GPUs" in message
    assert "GPUDRA_BACKEND" in message


async def test_a_state_dir_of_another_profile_is_refused(nats_server: EmbeddedNats, tmp_path: Path) -> None:
    await open_devices(discovery_settings(nats_server.url, tmp_path, profile="dgx-h100"))
    with pytest.raises(StartupError, match=r"created with profile 'dgx-h100', not 'dgx-a100'.*GPUDRA_SIMULATED_DIR"):
        await open_devices(discovery_settings(nats_server.url, tmp_path, profile="dgx-a100"))


async def test_an_unusable_kubernetes_config_exits_with_the_kube_code(
    nats_server: EmbeddedNats, bus: Bus, tmp_path: Path
) -> None:
    settings = discovery_settings(nats_server.url, tmp_path, kube_mode="cluster", kubeconfig=str(tmp_path / "none"))
    with pytest.raises(StartupError, match=r"cannot load kubeconfig .*GPUDRA_KUBE_MODE=local") as caught:
        await open_kubernetes(settings, bus)
    assert caught.value.exit_code == EXIT_KUBE


async def test_an_unreachable_api_server_says_how_to_skip_the_version_question(
    nats_server: EmbeddedNats, bus: Bus, tmp_path: Path
) -> None:
    settings = discovery_settings(nats_server.url, tmp_path, kube_mode="cluster", kubeconfig="http://127.0.0.1:9")
    with pytest.raises(StartupError, match=r"cannot read the Kubernetes version.*GPUDRA_KUBE_MINOR") as caught:
        await open_kubernetes(settings, bus)
    assert caught.value.exit_code == EXIT_KUBE
    given = await open_kubernetes(
        discovery_settings(
            nats_server.url, tmp_path, kube_mode="cluster", kubeconfig="http://127.0.0.1:9", kube_minor=35
        ),
        bus,
    )
    assert (given.mode, given.minor) == ("cluster", 35)
    await given.api.close()
