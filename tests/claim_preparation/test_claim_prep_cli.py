"""``gpudra claim create|list`` and ``gpudra kubelet prepare NAME`` (UID looked up) against the real service."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from cli.claims import UsageError, allocation, claim_object, parse_devices, read_config, table
from cli.main import parser
from cli.shares import whole_devices
from libs.bus import Bus
from libs.devices.simulated import load_profile
from libs.devices.simulated.ops import initial_state, inventory_of
from libs.kube import LocalKube
from libs.kube.slice_publisher import SlicePublisher
from libs.natsserver import EmbeddedNats
from libs.slices.devices import MigMode
from services.claim_preparation.service import ClaimService
from services.claim_preparation.settings import Settings
from services.discovery.settings import STANDALONE_KUBE_MINOR
from services.discovery.slices_sync import desired_slices
from services.kubelet_shim.service import serve
from tests.claim_preparation.claim_prep_support import DRIVER, NODE, PROFILE, STATIC_MIG, cdi_files, gpu_config
from tests.kubelet_shim.shim_support import shim_settings, short_dir
from tests.support.nats_fixture import operator_args


async def _cli(*argv: str) -> int:
    args = parser().parse_args(list(argv))
    code: int = await asyncio.to_thread(args.run, args)
    return code


def test_devices_go_to_requests_by_kind() -> None:
    assert parse_devices(["gpu-1", STATIC_MIG, "train:gpu-2"]) == [
        ("gpu", "gpu-1"),
        ("mig", STATIC_MIG),
        ("train", "gpu-2"),
    ]
    with pytest.raises(UsageError, match=r"mixes kinds of device \(gpu.gpudra.io, mig.gpudra.io\)"):
        claim_object("c", "default", [("x", "gpu-1"), ("x", STATIC_MIG)], None, DRIVER)


@pytest.mark.parametrize("version", ["1.34.0", "1.35.0"])
def test_the_stored_claim_is_a_valid_resource_claim(version: str) -> None:
    devices = parse_devices(["gpu-1", "gpu-2", STATIC_MIG])
    claim = claim_object("train-0", "default", devices, gpu_config(), DRIVER)
    claim["status"] = {
        "allocation": allocation(whole_devices(devices, node=NODE, driver=DRIVER), gpu_config(), NODE, DRIVER)
    }
    kubernetes_validate.validate(claim, version, strict=True)
    assert claim["spec"]["devices"]["requests"][0]["exactly"]["count"] == 2


def test_a_config_file_is_checked_as_the_driver_will(tmp_path: Path) -> None:
    config = tmp_path / "mps.yaml"
    config.write_text("apiVersion: resource.gpudra.io/v1beta1\nkind: GpuConfig\nsharing: {strategy: MPS, mps: {}}\n")
    with pytest.raises(UsageError, match=r"unknown field sharing\.mps"):
        read_config(config, check=True)
    assert read_config(config, check=False)["sharing"]["mps"] == {}


def test_the_table_lists_devices() -> None:
    claim: dict[str, Any] = {
        "metadata": {"namespace": "default", "name": "a", "uid": "u"},
        "status": {
            "allocation": allocation(whole_devices([("gpu", "gpu-1")], node=NODE, driver=DRIVER), None, NODE, DRIVER)
        },
    }
    assert table([claim]).splitlines()[1].split() == ["default", "a", "u", "-", "gpu-1"]
    ready = {"type": "Ready", "status": "True", "reason": "Prepared", "message": "", "lastTransitionTime": "t"}
    waiting = {**ready, "status": "False", "reason": "DeviceUnhealthy"}
    claim["status"]["devices"] = [
        {"driver": DRIVER, "pool": NODE, "device": "gpu-1", "conditions": [ready]},
        {"driver": "nic.example.com", "pool": NODE, "device": "eth0", "conditions": [waiting]},
    ]
    assert table([claim]).splitlines()[1].split()[3] == "1/2"


async def publish_slices(bus: Bus, *, shared_gpus: bool = False) -> None:
    """The node's ResourceSlices as discovery publishes them: what ``claim create`` may allocate from."""
    inventory = inventory_of(initial_state(NODE, load_profile(PROFILE)))
    desired = desired_slices(
        inventory, {}, k8s_minor=STANDALONE_KUBE_MINOR, mig_mode=MigMode.DYNAMIC, shared_gpus=shared_gpus
    )
    await SlicePublisher(await LocalKube.open(bus.js), NODE, driver=DRIVER, synthetic_owner=True).publish(desired)


@asynccontextmanager
async def kubelet_registry(bus: Bus, nats_url: str, *, shared_gpus: bool = False) -> AsyncIterator[Path]:
    """The node's slices published and the kubelet_shim serving: the registry directory the CLI's kubelet uses."""
    await publish_slices(bus, shared_gpus=shared_gpus)
    with short_dir("cpc-") as kubelet_dir:
        async with serve(bus, shim_settings(nats_url, kubelet_dir)):
            yield kubelet_dir / "plugins_registry"


@pytest.fixture
async def registry_dir(bus: Bus, nats_server: EmbeddedNats, service: ClaimService) -> AsyncIterator[Path]:
    async with kubelet_registry(bus, nats_server.url) as registry:
        yield registry


async def test_create_list_and_prepare_by_name(
    tmp_path: Path,
    nats_server: EmbeddedNats,
    registry_dir: Path,
    settings: Settings,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = operator_args(nats_server.url)
    config = tmp_path / "ts.json"
    config.write_text(json.dumps(gpu_config(strategy="TimeSlicing", timeSlicingConfig={"interval": "Short"})))
    create = ["claim", "create", "train-0", "--device", "gpu-4", "--config", str(config), "--node", NODE]
    assert await _cli(*create, "-o", "json", *url) == 0
    uid = json.loads(capsys.readouterr().out)["metadata"]["uid"]
    assert await _cli("claim", "list", *url) == 0
    assert capsys.readouterr().out.splitlines()[1].split() == ["default", "train-0", uid, "-", "gpu-4"]
    kubelet = ["--registry-dir", str(registry_dir), "--driver", DRIVER, *url]
    assert await _cli("kubelet", "prepare", "train-0", "-o", "json", *kubelet) == 0
    prepared = json.loads(capsys.readouterr().out)
    assert prepared[uid]["devices"][0]["cdi_device_ids"] == [f"k8s.{DRIVER}/claim={uid}-gpu-4"]
    assert len(cdi_files(settings)) == 1
    assert await _cli("kubelet", "unprepare", "train-0", *kubelet) == 0
    assert capsys.readouterr().out.strip() == f"default/train-0 (uid {uid}): unprepared"
    assert await _cli("kubelet", "prepare", "ghost", *kubelet) == 1
    assert "no ResourceClaim default/ghost in the standalone store" in capsys.readouterr().err


async def test_a_device_the_node_does_not_publish_is_refused_and_claims_can_be_deleted(
    nats_server: EmbeddedNats, registry_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = operator_args(nats_server.url)
    for wrong in ("gpu-99", "gpu3"):
        assert await _cli("claim", "create", "bad", "--device", wrong, "--node", NODE, *url) == 2
        assert f"node {NODE} publishes no device {wrong}; it has gpu-0" in capsys.readouterr().err
    assert await _cli("claim", "create", "bad", "--device", "gpu-1", "--node", "elsewhere", *url) == 2
    assert "node elsewhere publishes no gpu.gpudra.io devices" in capsys.readouterr().err
    assert await _cli("claim", "create", "short-lived", "--device", "gpu-5", "--node", NODE, *url) == 0
    assert await _cli("claim", "delete", "short-lived", *url) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "resourceclaim default/short-lived deleted"
    assert await _cli("claim", "delete", "short-lived", *url) == 2
    assert "no ResourceClaim default/short-lived in the standalone store" in capsys.readouterr().err


async def test_get_shows_what_the_driver_reports_of_each_device(
    nats_server: EmbeddedNats, registry_dir: Path, service: ClaimService, capsys: pytest.CaptureFixture[str]
) -> None:
    url = operator_args(nats_server.url)
    assert await _cli("claim", "create", "infer-0", "--device", "gpu-5", "--node", NODE, "-o", "json", *url) == 0
    uid = json.loads(capsys.readouterr().out)["metadata"]["uid"]
    kubelet = ["--registry-dir", str(registry_dir), "--driver", DRIVER, *url]
    assert await _cli("kubelet", "prepare", "infer-0", *kubelet) == 0
    capsys.readouterr()
    writer = service.preparer.parts.device_status
    assert writer is not None
    await writer.flush()  # written now rather than after the writer's delay
    assert await _cli("claim", "get", "infer-0", "-o", "json", *url) == 0
    claim = json.loads(capsys.readouterr().out)
    kubernetes_validate.validate(claim, "1.36.0", strict=True)
    [status] = claim["status"]["devices"]
    assert (status["device"], status["conditions"][0]["status"]) == ("gpu-5", "True")
    assert status["data"]["uuid"].startswith("GPU-")
    assert await _cli("claim", "get", "infer-0", *url) == 0
    text = capsys.readouterr().out
    assert f"gpu-5 on {NODE} [{DRIVER}]: Ready=True (Prepared)" in text
    assert f"CDI k8s.{DRIVER}/claim={uid}-gpu-5" in text
    assert await _cli("claim", "list", *url) == 0
    assert capsys.readouterr().out.splitlines()[1].split()[3] == "1/1"


@pytest.fixture
async def shared_registry_dir(bus: Bus, nats_server: EmbeddedNats, service: ClaimService) -> AsyncIterator[Path]:
    """As ``registry_dir``, with discovery's ``consumable_capacity`` on: GPUs 4-7 (80Gi, MIG off) are shareable."""
    async with kubelet_registry(bus, nats_server.url, shared_gpus=True) as registry:
        yield registry


async def test_the_allocator_hands_out_shares_that_fit_and_refuses_one_that_does_not(
    nats_server: EmbeddedNats,
    shared_registry_dir: Path,
    service: ClaimService,
    settings: Settings,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = operator_args(nats_server.url)
    kubelet = ["--registry-dir", str(shared_registry_dir), "--driver", DRIVER, *url]
    create = ["claim", "create", "--device", "gpu-4", "--node", NODE, "-o", "json", *url]
    assert await _cli(*create[:2], "half-0", *create[2:], "--memory", "40Gi") == 0
    first = json.loads(capsys.readouterr().out)
    # 39940Mi is rounded up to 40Gi, as the scheduler rounds to the request policy's step of 1Gi.
    assert await _cli(*create[:2], "half-1", *create[2:], "--memory", "39940Mi", "--capacity", "computePercent=30") == 0
    second = json.loads(capsys.readouterr().out)
    for claim in (first, second):
        kubernetes_validate.validate(claim, "1.36.0", strict=True)
    [result] = second["status"]["allocation"]["devices"]["results"]
    assert result["consumedCapacity"] == {"computePercent": "30", "memory": "40Gi"}
    assert second["spec"]["devices"]["requests"][0]["exactly"]["capacity"] == {
        "requests": {"computePercent": "30", "memory": "39940Mi"}
    }
    refusals = [
        (["--memory", "1Gi"], "memory, 80Gi of it held by default/half-0 (40Gi), default/half-1 (40Gi): 1Gi more"),
        ([], "80Gi more does not fit (0 left)"),  # asking for nothing is asking for all the memory
        (["--capacity", "computePercent=80"], "100 computePercent, 30 of it held by default/half-0 (0), "),
    ]
    for flags, expected in refusals:
        assert await _cli(*create[:2], "one-more", *create[2:], *flags) == 2
        assert expected in capsys.readouterr().err
    assert await _cli(*create[:2], "too-big", "--device", "gpu-5", *create[4:], "--memory", "81Gi") == 2
    assert "memory 81Gi is over what one share may have (80Gi)" in capsys.readouterr().err

    for name in ("half-0", "half-1"):
        assert await _cli("kubelet", "prepare", name, *kubelet) == 0
    capsys.readouterr()
    assert len(cdi_files(settings)) == 2
    writer = service.preparer.parts.device_status
    assert writer is not None
    await writer.flush()
    assert await _cli("claim", "get", "half-1", "-o", "json", *url) == 0
    claim = json.loads(capsys.readouterr().out)
    kubernetes_validate.validate(claim, "1.36.0", strict=True)
    [status] = claim["status"]["devices"]
    assert status["shareID"] == result["shareID"]
    assert status["data"]["mpsClient"] == {"pinnedDeviceMemoryLimitBytes": 40 * 2**30, "activeThreadPercentage": 30}
    assert await _cli("claim", "get", "half-1", *url) == 0
    assert "allocated: gpu-4 (share: computePercent 30, memory 40Gi)" in capsys.readouterr().out

    # Unprepare of one leaves the other prepared; deleting it frees room for another share.
    assert await _cli("kubelet", "unprepare", "half-0", *kubelet) == 0
    assert len(cdi_files(settings)) == 1
    assert await _cli("claim", "delete", "half-0", *url) == 0
    assert await _cli(*create[:2], "one-more", *create[2:], "--memory", "1Gi") == 0
