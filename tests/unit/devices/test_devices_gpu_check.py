import io
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from libs.devices import open_backend
from libs.devices.errors import BackendUnavailable
from libs.devices.gpu_check import main
from libs.devices.simulated import SimulatedBackend

REPO = Path(__file__).resolve().parents[3]


def test_gpu_check_prints_the_inventory_and_valid_slices(tmp_path: Path) -> None:
    profile = tmp_path / "a30.yaml"
    profile.write_text(
        "name: a30\ngpu_model: A30-PCIE-24GB\ngpu_count: 2\nmig_enabled: [0]\n"
        "mig_devices: [{gpu: 0, profile: 2g.12gb, placement: 2}]\n"
    )
    out = io.StringIO()
    argv = ["--backend", "simulated", "--state-dir", str(tmp_path / "sim"), "--profile", str(profile), "--node", "n1"]
    assert main([*argv, "--mig-mode", "dynamic", "--k8s-minor", "34"], out=out) == 0
    text = out.getvalue()
    assert "node n1 (simulated): driver 570.133.20, CUDA 12.8, 2 GPU(s)" in text
    assert "gpu-0-mig-2g12gb-5-2" in text
    slices = list(yaml.safe_load_all(text[text.index("apiVersion:") :]))
    assert {s["kind"] for s in slices} == {"ResourceSlice"}
    assert any("sharedCounters" in s["spec"] for s in slices)


def test_gpu_check_without_nvml_says_what_to_use(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--node", "n1"], out=io.StringIO()) == 2
    assert "--backend simulated" in capsys.readouterr().err


def test_the_script_runs_from_anywhere(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            REPO / "scripts/gpu-check",
            "--backend",
            "simulated",
            "--state-dir",
            "sim",
            "--profile",
            "dgx-a100",
            "--no-slices",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=os.environ | {"NODE_NAME": "lab-1"},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("node lab-1 (simulated)")
    assert (tmp_path / "sim/state.json").exists()


async def test_open_backend_picks_the_backend_by_name(tmp_path: Path) -> None:
    backend = await open_backend("simulated", "n1", tmp_path, "dgx-h200")
    assert isinstance(backend, SimulatedBackend)
    assert len((await backend.inventory()).gpus) == 8
    with pytest.raises(BackendUnavailable, match="no state directory"):
        await open_backend("simulated", "n1")
