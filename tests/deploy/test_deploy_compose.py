"""docker-compose.yml, the Dockerfile and .dockerignore agree with the code they package and run.

No Docker engine here: the files are read as data. Every compose service runs an existing ``services.<name>``
module with only ``GPUDRA_*`` names that service's settings struct has, and values it accepts.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import tomllib
from pathlib import Path
from typing import Any

import msgspec
import pytest
import yaml

from libs.runtime.probes import READINESS_PATH
from libs.settings import CommonSettings, SettingsError, env_name, load_settings
from tests.deploy.deploy_support import ROOT, service_settings

COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
KERNEL_FILESYSTEMS = (Path("/proc"), Path("/sys"))

Obj = dict[str, Any]


def compose() -> Obj:
    loaded = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(loaded, dict)
    return loaded


def gpudra_services() -> dict[str, tuple[Obj, str]]:
    """Compose service name -> (its definition, the gpudra module it runs)."""
    found: dict[str, tuple[Obj, str]] = {}
    for name, service in compose()["services"].items():
        command = service.get("command", [])
        if command[:2] == ["python", "-m"]:
            assert len(command) == 3, f"{name}: expected python -m services.<name>, not {command}"
            found[name] = service, command[2]
    return found


def environment(service: Obj) -> dict[str, str]:
    env = service.get("environment", {})
    assert isinstance(env, dict), "environment as a mapping, so common settings merge with <<"
    return {name: str(value) for name, value in env.items()}


def load(name: str) -> CommonSettings:
    service, module = gpudra_services()[name]
    try:
        return load_settings(service_settings()[module.removeprefix("services.")], [], environment(service))
    except SettingsError as exc:
        pytest.fail(f"compose service {name}: {exc}")


def mounts(service: Obj) -> list[Path]:
    return [Path(volume.split(":")[1]) for volume in service.get("volumes", [])]


def dockerfile_dirs() -> list[Path]:
    """Directories the image creates itself (a path setting may point there without a volume)."""
    made = re.findall(r"mkdir -p ([^&\n]+)", DOCKERFILE.read_text())
    return [Path(part) for line in made for part in line.split()]


def test_commands_name_existing_service_modules() -> None:
    modules = {module for _, module in gpudra_services().values()}
    for module in modules:
        assert module.startswith("services."), module
        assert importlib.util.find_spec(f"{module}.__main__") is not None, f"{module} cannot be run with python -m"
    assert modules == {f"services.{name}" for name in service_settings()}, "every service runs in compose"


@pytest.mark.parametrize("name", sorted(gpudra_services()))
def test_gpudra_variables_are_settings_of_the_service_they_are_given_to(name: str) -> None:
    service, module = gpudra_services()[name]
    known = {env_name(field.name) for field in msgspec.structs.fields(service_settings()[module[len("services.") :]])}
    given = {variable for variable in environment(service) if variable.startswith("GPUDRA_")}
    assert given - known == set(), f"{name} runs {module}, which has no settings {sorted(given - known)}"
    load(name)


def test_every_gpudra_name_in_the_compose_file_is_a_setting() -> None:
    known = {env_name(f.name) for settings in service_settings().values() for f in msgspec.structs.fields(settings)}
    written = set(re.findall(r"GPUDRA_[A-Z0-9_]*[A-Z0-9]", COMPOSE.read_text()))
    assert written - known == set()


def test_services_agree_on_the_node_and_the_bus() -> None:
    loaded = [load(name) for name in gpudra_services()]
    assert {settings.node_name for settings in loaded} == {"node-0"}
    (url,) = {settings.nats_url for settings in loaded}
    host, port = re.fullmatch(r"nats://([a-z0-9-]+):(\d+)", url).groups()  # type: ignore[union-attr]
    nats = compose()["services"][host]
    assert nats["image"] == "nats:2.11"
    assert "-js" in nats["command"]
    assert port == "4222"


@pytest.mark.parametrize("name", sorted(gpudra_services()))
def test_healthchecks_ask_the_service_whether_it_is_ready(name: str) -> None:
    """``docker compose ps`` says healthy once the service is connected to NATS, not merely running."""
    command = " ".join(gpudra_services()[name][0]["healthcheck"]["test"])
    assert f"http://127.0.0.1:{load(name).metrics_port}{READINESS_PATH}'" in command, command


@pytest.mark.parametrize("name", sorted(gpudra_services()))
def test_paths_named_by_settings_are_volumes_or_made_by_the_image(name: str) -> None:
    settings = load(name)
    places = [*mounts(gpudra_services()[name][0]), *dockerfile_dirs()]
    for field in msgspec.structs.fields(type(settings)):
        value = getattr(settings, field.name)
        if not (isinstance(value, str) and value.startswith("/")):
            continue
        path = Path(value)
        if path == Path("/") or any(path.is_relative_to(kernel) for kernel in KERNEL_FILESYSTEMS):
            continue
        assert any(path.is_relative_to(place) for place in places), f"{name}: {env_name(field.name)}={value}"


def test_shared_directories_are_shared_volumes() -> None:
    """The shim's sockets reach the CLI (the kubelet stand-in); the simulated machine is one for both users."""
    services = compose()["services"]
    volumes = {name: set(service.get("volumes", [])) for name, service in services.items()}
    assert "kubelet:/var/lib/kubelet" in volumes["kubelet-shim"] & volumes["cli"]
    assert "state:/var/lib/gpudra" in volumes["discovery"] & volumes["claim-preparation"]
    assert "cdi:/var/run/cdi" in volumes["claim-preparation"] & volumes["cli"]
    shim, discovery, claims = load("kubelet-shim"), load("discovery"), load("claim-preparation")
    assert getattr(shim, "kubelet_dir", None) == "/var/lib/kubelet"
    assert getattr(discovery, "backend", None) == getattr(claims, "backend", None) == "simulated"
    assert getattr(discovery, "simulated_dir", None) == getattr(claims, "simulated_dir", None)
    assert getattr(claims, "cdi_dir", None) == "/var/run/cdi"
    declared = set(compose()["volumes"])
    used = {volume.split(":")[0] for service in services.values() for volume in service.get("volumes", [])}
    assert used == declared


def test_cli_service_runs_the_console_script() -> None:
    cli = compose()["services"]["cli"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert cli["command"][0] in scripts
    assert cli["profiles"] == ["tools"], "a tool, not started by `docker compose up`"


# --- Dockerfile and .dockerignore -----------------------------------------------------------------------------


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def test_dockerfile_builds_a_non_root_image_without_dev_dependencies() -> None:
    steps = instructions()
    assert [args for op, args in steps if op == "FROM"] == ["python:3.11-slim"]
    assert "ENTRYPOINT" not in [op for op, _ in steps], "each deployment picks the service by command"
    (cmd,) = [args for op, args in steps if op == "CMD"]
    assert yaml.safe_load(cmd) == ["gpudra", "--help"]
    (user,) = [args for op, args in steps if op == "USER"]
    assert re.fullmatch(r"[1-9]\d*:[1-9]\d*", user), "a numeric, non-root user (runAsNonRoot can check it)"
    installs = [args for op, args in steps if op == "RUN" and "pip install" in args]
    assert installs, "the image installs the project"
    assert not any("[dev]" in args or "-e " in args for args in installs), "runtime dependencies only, no editable"


def test_image_user_is_the_one_kubernetes_runs_as() -> None:
    (user,) = [args for op, args in instructions() if op == "USER"]
    uid = int(user.split(":")[0])
    manifests = "\n".join(p.read_text() for p in sorted((ROOT / "deploy" / "kustomize" / "base").glob("*.yaml")))
    assert set(re.findall(r"runAsUser: ([1-9]\d*)", manifests)) == {str(uid)}
    assert set(re.findall(r"fsGroup: (\d+)", manifests)) == {str(uid)}


def test_dockerignore_keeps_local_state_and_caches_out() -> None:
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    for entry in (".git", ".venv", ".gpudra", "**/__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache"):
        assert entry in ignored, entry
    packaged = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    for pattern in packaged["include"]:
        assert pattern.rstrip("*") not in ignored, f"{pattern} is packaged: it must reach the build context"
    assert "README.md" not in ignored, "pyproject.toml names it as the package readme"
