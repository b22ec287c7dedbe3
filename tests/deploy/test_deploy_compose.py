"""docker-compose.yml, the Dockerfile and .dockerignore agree with the code they package and run.

No Docker engine here: the files are read as data. Every compose service runs an existing ``services.<name>``
module with only ``GPUDRA_*`` names that service's settings struct has, and values it accepts; each logs in to
NATS with its own credentials, which the ``trust`` step writes before NATS starts and the ``bootstrap`` step
follows with the streams. Then the file is run for real, without Docker: its commands and environments as local
processes, named volumes as local directories, the real nats-server.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.util
import os
import re
import shutil
import sys
import tempfile
import tomllib
import urllib.request
from pathlib import Path
from typing import Any

import msgspec
import pytest
import yaml

from cli.bus import BOOTSTRAP
from cli.main import parser as cli_parser
from libs.bus.topology import BusLimits
from libs.natsserver import free_port, nats_server_binary
from libs.runtime.probes import READINESS_PATH
from libs.settings import CommonSettings, SettingsError, env_name, load_settings
from libs.trust.roles import PRINCIPALS
from tests.deploy.deploy_support import ROOT, RUNTIME_PROVIDED, bootstrap_env_names, paths_used, service_settings

COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
CLUSTER_ONLY = {"auth_callout", "admission"}
"""The callout is the cluster's way of logging in (here every client has a credentials file); the admission
webhook is called by kube-apiserver, and compose runs none (claims are written to gpudra_kube)."""
USERS = Path("/trust/users")

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
        settings = load_settings(service_settings()[module.removeprefix("services.")], [], environment(service))
    except SettingsError as exc:
        pytest.fail(f"compose service {name}: {exc}")
    assert isinstance(settings, CommonSettings), f"compose service {name} runs no service on the bus"
    return settings


def mounts(service: Obj) -> list[Path]:
    return [Path(volume.split(":")[1]) for volume in service.get("volumes", [])]


def dockerfile_dirs() -> list[Path]:
    """Directories the image creates itself (a path setting may point there without a volume)."""
    made = re.findall(r"mkdir -p ([^&\n]+)", re.sub(r"\\\n", " ", DOCKERFILE.read_text()))
    return [Path(part) for line in made for part in line.split() if part.startswith("/")]


def test_commands_name_existing_service_modules() -> None:
    modules = {module for _, module in gpudra_services().values()}
    for module in modules:
        assert module.startswith("services."), module
        assert importlib.util.find_spec(f"{module}.__main__") is not None, f"{module} cannot be run with python -m"
    wanted = {f"services.{name}" for name in service_settings() if name not in CLUSTER_ONLY}
    assert modules == wanted, "every service runs in compose"


@pytest.mark.parametrize("name", sorted(gpudra_services()))
def test_gpudra_variables_are_settings_of_the_service_they_are_given_to(name: str) -> None:
    service, module = gpudra_services()[name]
    known = {env_name(field.name) for field in msgspec.structs.fields(service_settings()[module[len("services.") :]])}
    given = {variable for variable in environment(service) if variable.startswith("GPUDRA_")}
    assert given - known == set(), f"{name} runs {module}, which has no settings {sorted(given - known)}"
    load(name)


def test_every_gpudra_name_in_the_compose_file_is_a_setting() -> None:
    known = {env_name(f.name) for settings in service_settings().values() for f in msgspec.structs.fields(settings)}
    known |= bootstrap_env_names()
    written = set(re.findall(r"GPUDRA_[A-Z0-9_]*[A-Z0-9]", COMPOSE.read_text()))
    assert written - known == set()


def test_services_agree_on_the_node_and_the_bus() -> None:
    loaded = [load(name) for name in gpudra_services()]
    assert {settings.node_name for settings in loaded} == {"node-0"}
    (url,) = {settings.nats_url for settings in loaded}
    host, port = re.fullmatch(r"nats://([a-z0-9-]+):(\d+)", url).groups()  # type: ignore[union-attr]
    nats = compose()["services"][host]
    assert nats["image"].startswith("nats:2.11")
    assert "-js" in nats["command"]
    assert port == "4222"


# --- logging in: trust, then NATS, then bootstrap, then the services -----------------------------------------


def steps() -> dict[str, tuple[Obj, argparse.Namespace]]:
    """Compose services that run the ``gpudra`` command once (``restart: "no"``, no profile): name -> (definition,
    its arguments as ``gpudra`` parses them)."""
    found = {}
    for name, service in compose()["services"].items():
        command = service.get("command", [])
        if command[:1] == ["gpudra"] and "profiles" not in service:
            assert service.get("restart") == "no", f"{name} runs once"
            found[name] = service, cli_parser().parse_args(command[1:])
    return found


def step(verb: str) -> tuple[str, Obj, argparse.Namespace]:
    (found,) = [(name, service, args) for name, (service, args) in steps().items() if args.verb == verb]
    return found


def after(service: Obj, dependency: str) -> str:
    """The condition ``service`` waits for on ``dependency`` (short-form lists only wait for the start)."""
    depends = service.get("depends_on", {})
    if isinstance(depends, list):
        return "service_started" if dependency in depends else ""
    return str(depends.get(dependency, {}).get("condition", ""))


def volume_at(service: Obj, target: Path) -> tuple[str, bool]:
    """(named volume, read-only) mounted at ``target`` or above it."""
    for volume in service.get("volumes", []):
        source, mount, *mode = volume.split(":")
        if target.is_relative_to(mount):
            return source, mode == ["ro"]
    pytest.fail(f"{target} is on no volume")


@pytest.mark.parametrize("name", sorted(gpudra_services()))
def test_every_service_logs_in_with_its_own_credentials(name: str) -> None:
    """Each service's own file, of the principal its connections name themselves after, from the trust volume,
    read-only. A service with another's file would hold the wrong permissions and fail at start."""
    service, module = gpudra_services()[name]
    principal = module.removeprefix("services.")
    assert principal in PRINCIPALS
    creds = load(name).nats_creds
    assert Path(creds) == USERS / f"{principal}.creds"
    _, trust_service, trust = step("trust")
    assert volume_at(service, Path(creds)) == (volume_at(trust_service, trust.dir)[0], True)
    assert after(service, "bootstrap") == "service_completed_successfully", "streams first, or the service exits"


def test_trust_comes_first_then_nats_then_bootstrap() -> None:
    """`gpudra bus trust` writes the authority NATS must trust before it starts, for the node the services
    name; `gpudra bus bootstrap` makes the streams, as the only client with the bootstrap role, once NATS is
    up; the CLI acts as the operator."""
    services = compose()["services"]
    trust_name, trust_service, trust = step("trust")
    assert trust.node == {load(name).node_name for name in gpudra_services()}.pop()
    trust_volume, read_only = volume_at(trust_service, trust.dir)
    assert not read_only, "trust writes there"
    nats = services["nats"]
    config = Path(nats["command"][nats["command"].index("-c") + 1])
    assert config == trust.dir / "nats-auth.json", "the server trusts the authority trust keeps"
    assert volume_at(nats, config) == (trust_volume, True)
    assert after(nats, trust_name) == "service_completed_successfully"
    bootstrap_name, bootstrap_service, bootstrap = step("bootstrap")
    assert after(bootstrap_service, "nats") == "service_healthy", "bootstrap gives up after a few seconds"
    assert "healthcheck" in nats
    env = environment(bootstrap_service)
    assert Path(env["GPUDRA_NATS_CREDS"]) == USERS / f"{BOOTSTRAP}.creds"
    assert volume_at(bootstrap_service, Path(env["GPUDRA_NATS_CREDS"])) == (trust_volume, True)
    assert bootstrap.nats_url == load(next(iter(gpudra_services()))).nats_url
    assert load_settings(BusLimits, [], env).stream_replicas == 1, "one server"
    cli = services["cli"]
    assert Path(environment(cli)["GPUDRA_NATS_CREDS"]) == USERS / "operator.creds"
    assert volume_at(cli, USERS / "operator.creds") == (trust_volume, True)
    assert set(steps()) == {trust_name, bootstrap_name}


def test_credentials_are_written_by_the_user_who_reads_them() -> None:
    """`gpudra bus trust` writes 0600 files; the services run as the image's user, so trust must too, into a
    directory the image gives that user (a named volume starts with the owner of its mount point). nats-server
    runs as root in its image, which reads them anyway."""
    (user,) = [args for op, args in instructions() if op == "USER"]
    _, trust_service, trust = step("trust")
    assert all("user" not in service for service in compose()["services"].values() if service.get("build"))
    assert "user" not in trust_service
    assert trust.dir in dockerfile_dirs()
    owned = re.findall(r"chown (\S+) ([^&\n]+)", re.sub(r"\\\n", " ", DOCKERFILE.read_text()))
    assert any(owner == user and str(trust.dir) in paths.split() for owner, paths in owned)
    assert "user" not in compose()["services"]["nats"], "the official image's root reads the 0600 files"


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
        if not (isinstance(value, str) and value.startswith("/")) or not paths_used(settings, field.name):
            continue
        path = Path(value)
        if path == Path("/") or any(path.is_relative_to(provided) for provided in RUNTIME_PROVIDED):
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


# --- the file, run without Docker ------------------------------------------------------------------------------


class ComposeRun:
    """docker-compose.yml's commands and environments as local processes: each named volume one local directory,
    each container's own image directories another, the nats service's host name the local server."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.monitor = free_port()
        self.processes: list[asyncio.subprocess.Process] = []

    def mounts(self, name: str, service: Obj) -> dict[str, Path]:
        found = {}
        for volume in service.get("volumes", []):
            source, target = volume.split(":")[:2]
            found[target] = self.root / "volumes" / source
        for made in dockerfile_dirs():
            found.setdefault(str(made), self.root / "containers" / name / made.relative_to("/"))
        for path in found.values():
            path.mkdir(parents=True, exist_ok=True)
        return found

    def local(self, name: str, service: Obj, text: str) -> str:
        mounts = self.mounts(name, service)
        paths = "|".join(re.escape(path) for path in sorted(mounts, key=len, reverse=True))
        text = re.sub(rf"(?<![\w.-])({paths})(?![\w.-])", lambda m: str(mounts[m.group(1)]), text)
        return text.replace("nats://nats:4222", f"nats://127.0.0.1:{self.port}")

    def env(self, name: str, service: Obj) -> dict[str, str]:
        env = {key: self.local(name, service, value) for key, value in environment(service).items()}
        if "GPUDRA_METRICS_PORT" in env:
            env |= {"GPUDRA_METRICS_PORT": str(free_port()), "GPUDRA_METRICS_HOST": "127.0.0.1"}
        # No Kubernetes, no kubeconfig: as in the container.
        return env | {"PATH": os.environ.get("PATH", ""), "HOME": str(self.root)}

    async def start(self, name: str, *command: str, env: dict[str, str] | None = None) -> asyncio.subprocess.Process:
        log = (self.root / f"{name}.log").open("ab")
        process = await asyncio.create_subprocess_exec(*command, env=env, stdout=log, stderr=log, cwd=self.root)
        log.close()
        self.processes.append(process)
        return process

    async def once(self, name: str) -> None:
        """A one-shot ``gpudra`` step, which must succeed."""
        service = compose()["services"][name]
        command = [self.local(name, service, arg) for arg in service["command"][1:]]
        process = await self.start(name, sys.executable, "-m", "cli", *command, env=self.env(name, service))
        assert await process.wait() == 0, (self.root / f"{name}.log").read_text()

    async def nats(self) -> None:
        """The nats service's command, on local ports, until its healthcheck's URL answers."""
        service = compose()["services"]["nats"]
        args = [self.local("nats", service, arg) for arg in service["command"]]
        args[args.index("-m") + 1] = str(self.monitor)
        server = await self.start("nats", nats_server_binary(), *args, "-a", "127.0.0.1", "-p", str(self.port))
        check = next(arg for arg in service["healthcheck"]["test"] if arg.startswith("http://"))
        await until_ok(check.replace(":8222/", f":{self.monitor}/"), server, self.root / "nats.log")

    async def stop(self) -> None:
        for process in reversed(self.processes):
            if process.returncode is None:
                process.terminate()
                await process.wait()


async def until_ok(url: str, process: asyncio.subprocess.Process, log: Path, timeout: float = 30) -> None:
    """Until ``url`` answers 200; the process must not exit meanwhile."""

    def get() -> int:
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                return int(answer.status)
        except (OSError, ValueError):
            return 0

    async with asyncio.timeout(timeout):
        while True:
            if await asyncio.to_thread(get) == 200:
                return
            assert process.returncode is None, f"exited with {process.returncode}: {log.read_text()[-3000:]}"
            await asyncio.sleep(0.2)


@pytest.mark.slow
async def test_the_compose_file_runs_with_its_credentials() -> None:
    """trust, nats, bootstrap, every service (ready: connected with its own credentials, its streams there), and
    the CLI as the operator listing them all."""
    root = Path(tempfile.mkdtemp(prefix="gpudra-compose-"))  # short: the shim's socket paths have a length limit
    run = ComposeRun(root)
    try:
        await run.once(step("trust")[0])
        await run.nats()
        await run.once(step("bootstrap")[0])
        ready = []
        for name, (service, module) in gpudra_services().items():
            env = run.env(name, service)
            process = await run.start(name, sys.executable, "-m", module, env=env)
            url = f"http://127.0.0.1:{env['GPUDRA_METRICS_PORT']}{READINESS_PATH}"
            ready.append(until_ok(url, process, root / f"{name}.log"))
        await asyncio.gather(*ready)
        cli = compose()["services"]["cli"]
        listing = await run.start(
            "cli-services",
            sys.executable,
            "-m",
            "cli",
            "services",
            "--nats-url",
            run.local("cli", cli, "nats://nats:4222"),
            env=run.env("cli", cli),
        )
        assert await listing.wait() == 0, (root / "cli-services.log").read_text()
        listed = (root / "cli-services.log").read_text()
        for _, module in gpudra_services().values():
            assert module.removeprefix("services.") in listed, listed
    finally:
        await run.stop()
        shutil.rmtree(root, ignore_errors=True)
