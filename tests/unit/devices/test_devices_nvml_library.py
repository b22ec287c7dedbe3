"""NVML and nvidia-smi taken from a driver root (a fake one in a temporary directory: no GPU is needed)."""

from __future__ import annotations

import ctypes
import logging
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from libs.devices.nvml import library
from libs.devices.nvml.library import NVML_SONAME, NvmlLibrary, find_nvml, load_nvml

ROOT_DIR = Path(__file__).resolve().parents[3]
VERSION = "570.133.20"
FAKE_NVML = r"""
#include <string.h>
int nvmlInitWithFlags(unsigned int flags) { return 0; }
int nvmlShutdown(void) { return 0; }
int nvmlSystemGetDriverVersion(char *version, unsigned int length) {
    strncpy(version, "preloaded-from-the-driver-root", length);
    return 0;
}
"""


def _driver_root(root: Path, lib_dir: str = "usr/lib/x86_64-linux-gnu") -> Path:
    """The host's layout: the versioned library, the soname link to it, nvidia-smi."""
    folder = root / lib_dir
    folder.mkdir(parents=True)
    (folder / f"libnvidia-ml.so.{VERSION}").write_bytes(b"")
    (folder / NVML_SONAME).symlink_to(f"libnvidia-ml.so.{VERSION}")
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/bin/nvidia-smi").write_text("#!/bin/sh\n")
    return folder / NVML_SONAME


class Loads:
    """Stands in for ``ctypes.CDLL``: records what was loaded and how."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def __call__(self, name: str, mode: int = 0) -> object:
        self.calls.append((name, mode))
        return object()


@pytest.fixture
def loads(monkeypatch: pytest.MonkeyPatch) -> Loads:
    recorder = Loads()
    monkeypatch.setattr(ctypes, "CDLL", recorder)
    return recorder


def test_the_library_and_nvidia_smi_are_found_in_the_folders_cdi_specs_mount_from(tmp_path: Path) -> None:
    nvml = _driver_root(tmp_path)
    (tmp_path / "usr/lib" / NVML_SONAME).write_bytes(b"")  # later in the search list than the multiarch folder
    assert find_nvml(str(tmp_path)) == NvmlLibrary(path=str(nvml), nvidia_smi=f"{tmp_path}/usr/bin/nvidia-smi")
    assert find_nvml(str(tmp_path / "nothing")) == NvmlLibrary()


def test_the_roots_library_is_preloaded_globally_so_loading_it_by_name_finds_it(
    tmp_path: Path, loads: Loads, caplog: pytest.LogCaptureFixture
) -> None:
    nvml = _driver_root(tmp_path, "usr/lib64")
    with caplog.at_level(logging.INFO, logger=library.__name__):
        found = load_nvml(str(tmp_path))
    assert loads.calls == [(str(nvml), ctypes.RTLD_GLOBAL)]
    assert found.path == str(nvml)
    assert f"NVML: {nvml}; nvidia-smi: {tmp_path}/usr/bin/nvidia-smi" in caplog.text


def test_without_a_library_in_the_root_the_default_load_by_name_is_kept_and_logged(
    tmp_path: Path, loads: Loads, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "usr/bin").mkdir(parents=True)
    (tmp_path / "usr/bin/nvidia-smi").write_text("#!/bin/sh\n")  # useless without the library it loads
    with caplog.at_level(logging.INFO, logger=library.__name__):
        found = load_nvml(str(tmp_path))
    assert found == NvmlLibrary()
    assert loads.calls == []
    assert f"NVML: {NVML_SONAME} by name (none in /usr/lib64, " in caplog.text
    assert f"under driver root {tmp_path})" in caplog.text


def test_a_library_that_does_not_load_falls_back_to_the_default(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    nvml = _driver_root(tmp_path)  # an empty file: the real dynamic loader refuses it
    assert load_nvml(str(tmp_path)) == NvmlLibrary()
    [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.startswith(f"NVML: {nvml} cannot be loaded (")
    assert warning.endswith(f"; {NVML_SONAME} by name instead")


def test_nvidia_smi_runs_with_the_roots_library_preloaded_or_as_found_on_path() -> None:
    name, env = NvmlLibrary(
        path="/driver-root/usr/lib64/libnvidia-ml.so.1", nvidia_smi="/driver-root/usr/bin/x"
    ).smi_command()
    assert name == "/driver-root/usr/bin/x"
    assert env is not None
    assert env["LD_PRELOAD"] == "/driver-root/usr/lib64/libnvidia-ml.so.1"
    assert NvmlLibrary().smi_command() == ("nvidia-smi", None)


@pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler to build a stand-in libnvidia-ml")
def test_pynvml_talks_to_the_preloaded_library(tmp_path: Path) -> None:
    """The mechanism itself, in a fresh interpreter: pynvml's open by soname gets the library preloaded by path.

    The stand-in is in no folder the loader searches, so without the preload pynvml would find either no NVML
    or the machine's own, and neither answers with the stand-in's driver version.
    """
    source = tmp_path / "nvml.c"
    source.write_text(FAKE_NVML)
    folder = tmp_path / "root/usr/lib64"
    folder.mkdir(parents=True)
    built = ["cc", "-shared", "-fPIC", f"-Wl,-soname,{NVML_SONAME}", "-o", str(folder / NVML_SONAME), str(source)]
    subprocess.run(built, check=True, capture_output=True)
    script = textwrap.dedent(
        f"""
        import pynvml
        from libs.devices.nvml.library import load_nvml
        assert load_nvml({str(tmp_path / "root")!r}).path
        pynvml.nvmlInit()
        print(pynvml.nvmlSystemGetDriverVersion())
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT_DIR, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "preloaded-from-the-driver-root"
