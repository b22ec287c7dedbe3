"""The Kustomize tree in deploy/ is valid, complete and uses only real settings.

No kustomize binary here, so the test builds each kustomization itself with the subset of kustomize the tree
uses (resources, namespace, strategic-merge patches, images) and refuses any other field, so the model cannot
silently fall behind the files. Every object of every build is checked against the Kubernetes 1.34 OpenAPI
schemas (strict: unknown fields are errors), and every ``GPUDRA_*`` name a container gets must be a field of
that service's settings struct, with a value the struct accepts. Least privilege is checked against what the
code does: a remediation runs against the Kubernetes API test server and its requests must be exactly what the
remediation ClusterRole grants, and the NATS permissions docs/deploy.md gives must cover health's subjects.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import copy
import os
import re
import shutil
import subprocess
import tomllib
from collections.abc import AsyncIterator, Iterator
from functools import cache
from pathlib import Path
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

import kubernetes_validate
import msgspec
import pytest
import trustme
import yaml

from cli import context as cli_context
from cli.bus import BOOTSTRAP, callout_secret, run_bootstrap
from cli.main import parser as cli_parser
from libs.bus import Bus
from libs.bus.directory import list_services
from libs.bus.topology import BusLimits
from libs.devices import DeviceSettings
from libs.events.catalogue.remediation import RemediationStateChanged
from libs.natsserver import EmbeddedNats, free_port, nats_server_binary
from libs.runtime.probes import LIVENESS_PATH, READINESS_PATH
from libs.settings import CommonSettings, ProcessSettings, SettingsError, env_name, load_settings
from libs.trust.roles import NODE_ROLES, PRINCIPALS, SERVICE_ROLES, Role, permissions
from libs.version import VERSION
from services.admission.decision import CHECKED
from services.admission.service import REVIEW_PATH
from services.admission.settings import Settings as AdmissionSettings
from services.auth_callout.admission import parse_grants
from services.auth_callout.service import lifespan as callout_lifespan
from services.auth_callout.settings import Settings as CalloutSettings
from tests.deploy.deploy_support import (
    ROOT,
    RUNTIME_PROVIDED,
    bootstrap_env_names,
    on_the_bus,
    paths_used,
    service_settings,
)
from tests.health_controller.health_controller_support import (
    Feed,
    RecordingReboot,
    add_node,
    add_pod,
    controller_process,
    controller_settings,
    health_event,
    light_node,
    pods_on,
)
from tests.support.kubeapi import KubeApiServer
from tests.support.kubeapi.resources import DEVICE_TAINT_RULES

DEPLOY = ROOT / "deploy"
KUSTOMIZE = DEPLOY / "kustomize"
DOC = ROOT / "docs" / "deploy.md"
BASE = KUSTOMIZE / "base"
OVERLAYS = sorted(path.parent for path in (KUSTOMIZE / "overlays").glob("*/kustomization.yaml"))
BUILDS = [BASE, *OVERLAYS]
K8S_VERSION = "1.34.0"
IMAGE = "ghcr.io/gpudra/gpudra"

Obj = dict[str, Any]
S = TypeVar("S", bound=msgspec.Struct)

# Kinds without a namespace. Kustomize's namespace transformer knows the older ones from its built-in schema and
# writes metadata.namespace into the newer (DeviceClass, ValidatingAdmissionPolicy...), which the API server
# drops for a cluster-scoped kind; the tests below read the namespace of namespaced kinds only.
CLUSTER_SCOPED = frozenset(
    {
        "Namespace",
        "ClusterRole",
        "ClusterRoleBinding",
        "DeviceClass",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
        "CustomResourceDefinition",
        "PriorityClass",
    }
)
WORKLOADS = frozenset({"DaemonSet", "Deployment", "StatefulSet"})
# What the downward API would give, for loading settings from a container's environment.
SAMPLE_FIELDS = {
    "spec.nodeName": "gpu-node-7.example.internal",
    "metadata.uid": "4f1c2a9e-0b7d-4e55-9c2e-8d1f3a6b7c90",
    "metadata.name": "gpudra-node-x2v9q",
    "metadata.namespace": "gpudra-system",
    "status.podIP": "10.244.3.17",
}
NODE_SERVICES = {"kubelet_shim", "discovery", "claim_preparation", "health", "compute_domain"}
CONTROLLER_SERVICES = {"health", "compute_domain"}
# The admission webhook: a Deployment of its own, called by kube-apiserver, on no bus.
ADMISSION_SERVICE = "admission"
# The NATS auth callout: deployed with the overlays that log in through it, not by the base.
CALLOUT_SERVICE = "auth_callout"
CALLOUT_BUNDLE = KUSTOMIZE / "auth-callout"
STANDALONE = KUSTOMIZE / "overlays" / "standalone-nats"
EXTERNAL = KUSTOMIZE / "overlays" / "external-nats"
CLI = "gpudra"
PRIVILEGED_SERVICES = {
    "discovery",
    "claim_preparation",
    "health",
    "compute_domain",
}  # NVML; IMEX opens /dev/nvidia-caps
WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})


# --- settings -------------------------------------------------------------------------------------------------


def env_names(service: str) -> frozenset[str]:
    return frozenset(env_name(field.name) for field in msgspec.structs.fields(service_settings()[service]))


# --- kustomize, the real one ----------------------------------------------------------------------------------


def load_docs(path: Path) -> list[Obj]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def kustomization(directory: Path) -> Obj:
    loaded = yaml.safe_load((directory / "kustomization.yaml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def key(obj: Obj) -> tuple[str, str, str, str]:
    meta = obj["metadata"]
    namespace = "" if obj["kind"] in CLUSTER_SCOPED else meta.get("namespace", "")
    return obj["apiVersion"], obj["kind"], namespace, meta["name"]


def pod_spec(obj: Obj) -> Obj | None:
    if obj["kind"] in WORKLOADS:
        spec: Obj = obj["spec"]["template"]["spec"]
        return spec
    return None


def containers(obj: Obj) -> list[Obj]:
    spec = pod_spec(obj)
    return [] if spec is None else [*spec.get("initContainers", []), *spec["containers"]]


def kustomize_command() -> list[str]:
    """What users build the manifests with: ``kubectl kustomize`` (kustomize v5 inside), or ``kustomize build``."""
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    pytest.skip("NEITHER kubectl NOR kustomize IS INSTALLED: the manifests were not built, nothing was checked")


@cache
def _build(directory: Path) -> tuple[Obj, ...]:
    done = subprocess.run([*kustomize_command(), str(directory)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"{directory}: kustomize failed: {done.stderr}"
    objects = [doc for doc in yaml.safe_load_all(done.stdout) if doc is not None]
    keys = [key(obj) for obj in objects]
    assert len(keys) == len(set(keys)), (
        f"{directory}: the same object twice: {sorted(k for k in keys if keys.count(k) > 1)}"
    )
    return tuple(objects)


def build(directory: Path) -> list[Obj]:
    """A fresh copy of what ``kubectl kustomize <directory>`` gives."""
    return copy.deepcopy(list(_build(directory.resolve())))


def by_kind(objects: list[Obj], kind: str) -> list[Obj]:
    return [obj for obj in objects if obj["kind"] == kind]


def one(objects: list[Obj], kind: str, name: str) -> Obj:
    found = [obj for obj in by_kind(objects, kind) if obj["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def build_id(directory: Path) -> str:
    return str(directory.relative_to(KUSTOMIZE))


def kustomization_dirs() -> list[Path]:
    return sorted(path.parent for path in KUSTOMIZE.rglob("kustomization.yaml"))


# --- gpudra containers ----------------------------------------------------------------------------------------


def cli_args(container: Obj) -> list[str] | None:
    """The arguments of a container that runs the ``gpudra`` command (the bootstrap step), None otherwise."""
    command = container.get("command", [])
    if container["image"].startswith(IMAGE + ":") and command[:1] == [CLI]:
        return list(command[1:])
    return None


def service_of(container: Obj) -> str | None:
    """The gpudra service a container runs (``python -m services.<name>``), None for other images and for
    ``gpudra`` commands (``cli_args``)."""
    if not container["image"].startswith(IMAGE + ":") or cli_args(container) is not None:
        return None
    command = container.get("command", [])
    assert len(command) == 3, f"{container['name']}: expected python -m services.<name>, not {command}"
    assert command[:2] == ["python", "-m"], f"{container['name']}: expected python -m services.<name>, not {command}"
    module = command[2]
    assert module.startswith("services."), f"{container['name']}: {module} is not a gpudra service"
    return str(module.removeprefix("services."))


def gpudra_containers(objects: list[Obj]) -> Iterator[tuple[Obj, Obj, str]]:
    """(workload, container, service) for every container that runs a gpudra service."""
    for obj in objects:
        for container in containers(obj):
            service = service_of(container)
            if service is not None:
                yield obj, container, service


def environment(objects: list[Obj], obj: Obj, container: Obj) -> dict[str, str]:
    """The container's environment as the kubelet would build it: envFrom first, env overriding."""
    env: dict[str, str] = {}
    namespace = obj["metadata"].get("namespace", "")
    for source in container.get("envFrom", []):
        assert set(source) == {"configMapRef"}, f"{container['name']}: only configMapRef sources are modelled"
        config = one(objects, "ConfigMap", source["configMapRef"]["name"])
        assert config["metadata"].get("namespace", "") == namespace
        env.update({name: str(value) for name, value in config.get("data", {}).items()})
    for entry in container.get("env", []):
        if "value" in entry:
            env[entry["name"]] = str(entry["value"])
        else:
            field = entry["valueFrom"]["fieldRef"]["fieldPath"]
            assert field in SAMPLE_FIELDS, f"{container['name']}: {entry['name']} from unmodelled field {field}"
            env[entry["name"]] = SAMPLE_FIELDS[field]
    return env


def settings_of(objects: list[Obj], obj: Obj, container: Obj, service: str) -> ProcessSettings:
    env = environment(objects, obj, container)
    try:
        return load_settings(service_settings()[service], [], env)
    except SettingsError as exc:
        pytest.fail(f"{obj['kind']}/{obj['metadata']['name']} container {container['name']}: {exc}")


def buildable(directory: Path) -> list[Obj]:
    """For parametrizing: a build that fails gives no cases here and fails test_each_kustomization_builds."""
    try:
        return build(directory)
    except AssertionError:
        return []


def container_cases() -> list[Any]:
    return [
        pytest.param(directory, obj["kind"], obj["metadata"]["name"], container["name"], service, id=case_id)
        for directory in BUILDS
        for obj, container, service in gpudra_containers(buildable(directory))
        for case_id in [f"{build_id(directory)}:{obj['metadata']['name']}/{container['name']}"]
    ]


def find_container(directory: Path, kind: str, name: str, container_name: str) -> tuple[list[Obj], Obj, Obj]:
    objects = build(directory)
    obj = one(objects, kind, name)
    return objects, obj, next(c for c in containers(obj) if c["name"] == container_name)


# --- files and kustomizations ---------------------------------------------------------------------------------


@pytest.mark.parametrize("directory", kustomization_dirs(), ids=build_id)
def test_every_file_a_kustomization_lists_exists(directory: Path) -> None:
    spec = kustomization(directory)
    for entry in spec.get("resources", []):
        target = directory / entry
        assert target.is_file() or (target / "kustomization.yaml").is_file(), f"{directory}: {entry} does not exist"
    for patch in spec.get("patches", []):
        assert (directory / patch["path"]).is_file(), f"{directory}: patch {patch['path']} does not exist"


def test_every_yaml_file_under_deploy_is_used_by_a_kustomization() -> None:
    used: set[Path] = set()
    for directory in kustomization_dirs():
        spec = kustomization(directory)
        used |= {(directory / entry).resolve() for entry in spec.get("resources", [])}
        used |= {(directory / patch["path"]).resolve() for patch in spec.get("patches", [])}
    files = {path.resolve() for path in DEPLOY.rglob("*.y*ml") if path.name != "kustomization.yaml"}
    assert sorted(files - used) == [], "YAML files no kustomization lists (dead, or forgotten in kustomization.yaml)"


@pytest.mark.parametrize("directory", BUILDS, ids=build_id)
def test_each_kustomization_builds(directory: Path) -> None:
    assert build(directory), f"{directory}: empty build"


def test_base_lists_the_device_classes() -> None:
    assert "deviceclasses.yaml" in kustomization(BASE)["resources"]
    assert by_kind(build(BASE), "DeviceClass"), "no DeviceClass in the base build"


# --- schemas --------------------------------------------------------------------------------------------------


def object_cases() -> list[Any]:
    return [
        pytest.param(directory, index, id=f"{build_id(directory)}:{obj['kind']}/{obj['metadata']['name']}")
        for directory in BUILDS
        for index, obj in enumerate(buildable(directory))
    ]


@pytest.mark.parametrize(("directory", "index"), object_cases())
def test_built_objects_validate_against_the_kubernetes_schemas(directory: Path, index: int) -> None:
    obj = build(directory)[index]
    if obj["apiVersion"].split("/")[0].endswith(".gpudra.io"):
        pytest.skip("custom resource: validated against its CRD by the CRD's own tests")
    kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


# --- settings names and values --------------------------------------------------------------------------------


@pytest.mark.parametrize(("directory", "kind", "name", "container_name", "service"), container_cases())
def test_gpudra_variables_are_settings_of_the_service_they_are_given_to(
    directory: Path, kind: str, name: str, container_name: str, service: str
) -> None:
    objects, obj, container = find_container(directory, kind, name, container_name)
    given = {variable for variable in environment(objects, obj, container) if variable.startswith("GPUDRA_")}
    unknown = given - env_names(service)
    assert not unknown, f"{container_name} runs {service}, which has no settings {sorted(unknown)}"
    settings_of(objects, obj, container, service)


def test_config_map_holds_only_settings_every_service_that_loads_it_has() -> None:
    for directory in BUILDS:
        objects = build(directory)
        loaders = {
            service
            for _, container, service in gpudra_containers(objects)
            if {"configMapRef": {"name": "gpudra-config"}} in container.get("envFrom", [])
        }
        assert loaders >= NODE_SERVICES | CONTROLLER_SERVICES
        common = frozenset.intersection(*(env_names(service) for service in loaders))
        data = one(objects, "ConfigMap", "gpudra-config").get("data", {})
        assert set(data) <= common, f"{build_id(directory)}: gpudra-config is loaded by {sorted(loaders)}"


def test_every_gpudra_name_written_in_deploy_is_a_setting() -> None:
    """Comments and NATS config included: a name in a comment is a promise too."""
    known = frozenset.union(*(env_names(service) for service in service_settings()), bootstrap_env_names())
    for path in sorted(DEPLOY.rglob("*")):
        if path.is_file():
            unknown = set(re.findall(r"GPUDRA_[A-Z0-9_]*[A-Z0-9]", path.read_text())) - known
            assert not unknown, f"{path.relative_to(ROOT)} names {sorted(unknown)}, which no service has"


@pytest.mark.parametrize(("directory", "kind", "name", "container_name", "service"), container_cases())
def test_node_name_comes_from_the_downward_api(
    directory: Path, kind: str, name: str, container_name: str, service: str
) -> None:
    _, _, container = find_container(directory, kind, name, container_name)
    entries = [entry for entry in container.get("env", []) if entry["name"] == "GPUDRA_NODE_NAME"]
    assert entries == [{"name": "GPUDRA_NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}], (
        f"{container_name}: GPUDRA_NODE_NAME must come from spec.nodeName"
    )


def test_every_service_runs_where_it_belongs() -> None:
    objects = build(BASE)
    node = {service for obj, _, service in gpudra_containers(objects) if obj["kind"] == "DaemonSet"}
    controller = {service for obj, _, service in gpudra_containers([one(objects, "Deployment", "gpudra-controller")])}
    admission = {service for obj, _, service in gpudra_containers([one(objects, "Deployment", "gpudra-admission")])}
    deployments = {service for obj, _, service in gpudra_containers(objects) if obj["kind"] == "Deployment"}
    assert node == NODE_SERVICES
    assert controller == CONTROLLER_SERVICES
    assert admission == {ADMISSION_SERVICE}
    assert deployments == controller | admission
    callout = {
        obj["metadata"]["name"]
        for obj, _, service in gpudra_containers(build(STANDALONE))
        if service == CALLOUT_SERVICE
    }
    assert callout == {"gpudra-auth-callout"}, "the in-cluster NATS sends every login to the callout"
    deployed = node | controller | admission | {CALLOUT_SERVICE}
    assert deployed == set(service_settings()), "a service is deployed nowhere"
    for module in deployed:
        assert (ROOT / "services" / module / "__main__.py").is_file()


@pytest.mark.parametrize("directory", BUILDS, ids=build_id)
def test_health_runs_as_node_on_nodes_and_as_controller_in_the_deployment(directory: Path) -> None:
    """Health's default role is ``both``: a workload that forgot GPUDRA_ROLE would run GPU monitors where there
    are no GPUs, or a remediation controller on every node."""
    objects = build(directory)
    roles = {
        obj["kind"]: getattr(settings_of(objects, obj, container, service), "role", None)
        for obj, container, service in gpudra_containers(objects)
        if service == "health"
    }
    assert roles == {"DaemonSet": "node", "Deployment": "controller"}
    assert one(objects, "Deployment", "gpudra-controller")["spec"]["replicas"] >= 2


def test_the_node_monitors_read_the_gpus_discovery_publishes_and_keep_their_ledger_on_the_host() -> None:
    objects = build(BASE)
    daemonset = one(objects, "DaemonSet", "gpudra-node")
    found = {service: container for _, container, service in gpudra_containers([daemonset])}
    health, discovery = (settings_of(objects, daemonset, found[name], name) for name in ("health", "discovery"))
    for field in ("backend", "profile", "simulated_state", "driver_root_seen"):
        assert getattr(health, field) == getattr(discovery, field), field
    toolkit = [
        {k: v for k, v in environment(objects, daemonset, found[name]).items() if k.startswith("NVIDIA_")}
        for name in ("health", "discovery")
    ]
    assert toolkit[0] == toolkit[1], "the NVIDIA container toolkit must give health what it gives discovery"
    assert toolkit[0].get("NVIDIA_VISIBLE_DEVICES") == "all"
    host_paths = {v["name"] for v in daemonset["spec"]["template"]["spec"]["volumes"] if "hostPath" in v}
    mounts = {Path(m["mountPath"]): m["name"] for m in found["health"]["volumeMounts"]}
    assert mounts.get(Path("/dev")) in host_paths, "NVML opens /dev/nvidia*"
    assert isinstance(health, CommonSettings)
    assert mounts.get(Path(health.state_dir)) in host_paths, "the ledger must outlive the pod"


def test_the_remediation_controller_uses_the_cluster_api() -> None:
    objects = build(BASE)
    deployment = one(objects, "Deployment", "gpudra-controller")
    (health,) = [c for _, c, service in gpudra_containers([deployment]) if service == "health"]
    assert getattr(settings_of(objects, deployment, health, "health"), "kube_mode", None) == "cluster"


# --- probes, ports, resources ---------------------------------------------------------------------------------


def port_number(container: Obj, port: int | str) -> int:
    if isinstance(port, int):
        return port
    numbers = [p["containerPort"] for p in container.get("ports", []) if p.get("name") == port]
    assert len(numbers) == 1, f"{container['name']}: no port named {port}"
    return int(numbers[0])


@pytest.mark.parametrize(("directory", "kind", "name", "container_name", "service"), container_cases())
def test_probes_need_no_exec_and_reach_the_configured_ports(
    directory: Path, kind: str, name: str, container_name: str, service: str
) -> None:
    objects, obj, container = find_container(directory, kind, name, container_name)
    settings = settings_of(objects, obj, container, service)
    for probe_name in ("livenessProbe", "readinessProbe", "startupProbe"):
        probe = container.get(probe_name)
        if probe is None:
            assert probe_name == "startupProbe", f"{container_name} has no {probe_name}"
            continue
        assert "exec" not in probe, f"{container_name}: {probe_name} runs a command; use grpc or httpGet"
        if "grpc" in probe:
            assert probe["grpc"]["port"] == getattr(settings, "grpc_health_port", None), f"{container_name}: grpc probe"
            assert getattr(settings, "grpc_health_host", "") == "0.0.0.0", "the kubelet probes the pod IP"
        else:
            assert port_number(container, probe["httpGet"]["port"]) == settings.metrics_port, container_name
            assert settings.metrics_host == "0.0.0.0", "the kubelet probes the pod IP"


@pytest.mark.parametrize(("directory", "kind", "name", "container_name", "service"), container_cases())
def test_probes_ask_the_service_whether_it_is_alive_and_ready(
    directory: Path, kind: str, name: str, container_name: str, service: str
) -> None:
    """Not ``/metrics``, which answers before NATS is connected and while the event loop is stuck."""
    _objects, _obj, container = find_container(directory, kind, name, container_name)
    for probe_name, path in (("livenessProbe", LIVENESS_PATH), ("readinessProbe", READINESS_PATH)):
        probe = container[probe_name]
        if "grpc" not in probe:  # the shim's grpc.health.v1, checked above
            assert probe["httpGet"]["path"] == path, f"{container_name}: {probe_name}"


@pytest.mark.parametrize("directory", BUILDS, ids=build_id)
def test_container_ports_are_unique_within_a_pod(directory: Path) -> None:
    for obj in build(directory):
        ports = [(p["containerPort"], p.get("name")) for c in containers(obj) for p in c.get("ports", [])]
        numbers = [number for number, _ in ports]
        names = [name for _, name in ports if name]
        assert len(numbers) == len(set(numbers)), f"{obj['metadata']['name']}: port used twice: {ports}"
        assert len(names) == len(set(names)), f"{obj['metadata']['name']}: port name used twice: {ports}"


@pytest.mark.parametrize("directory", BUILDS, ids=build_id)
def test_every_container_has_requests_and_a_memory_limit(directory: Path) -> None:
    for obj in build(directory):
        for container in containers(obj):
            resources = container.get("resources", {})
            assert {"cpu", "memory"} <= set(resources.get("requests", {})), f"{container['name']}: requests"
            assert "memory" in resources.get("limits", {}), f"{container['name']}: no memory limit"


# --- privileges -----------------------------------------------------------------------------------------------


def test_only_device_services_are_privileged() -> None:
    privileged = {
        service
        for _, container, service in gpudra_containers(build(BASE))
        if container.get("securityContext", {}).get("privileged")
    }
    assert privileged == PRIVILEGED_SERVICES


@pytest.mark.parametrize("directory", BUILDS, ids=build_id)
def test_unprivileged_containers_drop_everything(directory: Path) -> None:
    for obj in build(directory):
        for container in containers(obj):
            context = container.get("securityContext", {})
            assert context.get("readOnlyRootFilesystem") is True, f"{container['name']}: writable root filesystem"
            if context.get("privileged"):
                continue
            assert context.get("allowPrivilegeEscalation") is False, container["name"]
            assert context.get("capabilities", {}).get("drop") == ["ALL"], container["name"]


@pytest.mark.parametrize("directory", BUILDS, ids=build_id)
def test_containers_writing_host_directories_run_as_root(directory: Path) -> None:
    """The host's /var/run/cdi, /var/lib/gpudra and the kubelet's directories are root's: the image's user
    (10001) could not write them, and kubelet creates a missing hostPath directory owned by root."""
    for obj in build(directory):
        spec = pod_spec(obj)
        if spec is None:
            continue
        host = {v["name"] for v in spec.get("volumes", []) if "hostPath" in v and v["hostPath"]["path"] != "/dev"}
        for container in containers(obj):
            writes = [
                m["name"] for m in container.get("volumeMounts", []) if m["name"] in host and not m.get("readOnly")
            ]
            if writes:
                user = container.get("securityContext", {}).get("runAsUser")
                assert user == 0, f"{container['name']} writes host directories {writes} as user {user}"


@pytest.mark.parametrize("directory", BUILDS, ids=build_id)
def test_only_the_node_agent_touches_the_host(directory: Path) -> None:
    for obj in build(directory):
        spec = pod_spec(obj)
        if spec is None or obj["kind"] == "DaemonSet":
            continue
        assert not any("hostPath" in volume for volume in spec.get("volumes", [])), obj["metadata"]["name"]
        assert not any(spec.get(flag) for flag in ("hostNetwork", "hostPID", "hostIPC")), obj["metadata"]["name"]
        assert spec["securityContext"].get("runAsNonRoot") is True, obj["metadata"]["name"]
        for container in containers(obj):
            assert not container.get("securityContext", {}).get("privileged"), container["name"]


def host_volumes(obj: Obj) -> dict[str, str]:
    """Volume name to host path, for the workload's hostPath volumes."""
    return {v["name"]: v["hostPath"]["path"] for v in obj["spec"]["template"]["spec"]["volumes"] if "hostPath" in v}


def test_host_paths_are_mounted_where_they_are_on_the_host() -> None:
    """Socket, CDI and device paths are handed to the kubelet and the runtime: they must be host paths. The one
    exception is the driver root, which the settings name twice: on the host and where the service sees it."""
    objects = build(BASE)
    daemonset = one(objects, "DaemonSet", "gpudra-node")
    host_paths = host_volumes(daemonset)
    for container in containers(daemonset):
        service = service_of(container)
        settings = settings_of(objects, daemonset, container, service) if service else None
        for mount in container.get("volumeMounts", []):
            if mount["name"] not in host_paths:
                continue
            if isinstance(settings, DeviceSettings) and settings.driver_root_mount == mount["mountPath"]:
                assert settings.driver_root_path == host_paths[mount["name"]], f"{container['name']}: {mount}"
            else:
                assert mount["mountPath"] == host_paths[mount["name"]], f"{container['name']}: {mount}"


def test_nvml_services_see_the_hosts_driver_root_read_only_where_their_settings_say() -> None:
    """Else NVML is whatever the image or a runtime hook provides, and CDI specs lack the driver's files."""
    objects = build(BASE)
    daemonset = one(objects, "DaemonSet", "gpudra-node")
    host_paths = host_volumes(daemonset)
    checked = []
    for _, container, service in gpudra_containers([daemonset]):
        settings = settings_of(objects, daemonset, container, service)
        if not isinstance(settings, DeviceSettings) or settings.backend != "nvml":
            continue
        mounts = {m["mountPath"]: m for m in container.get("volumeMounts", [])}
        mount = mounts.get(settings.driver_root_mount)
        assert mount is not None, f"{container['name']}: GPUDRA_DRIVER_ROOT_MOUNT is on no volume"
        assert host_paths.get(mount["name"]) == settings.driver_root_path == "/", container["name"]
        assert mount.get("readOnly") is True, container["name"]
        assert mount.get("mountPropagation") == "HostToContainer", container["name"]
        checked.append(service)
    assert sorted(checked) == ["claim_preparation", "compute_domain", "discovery", "health"]


def path_settings(settings: ProcessSettings) -> Iterator[tuple[str, Path]]:
    """Settings whose value is an absolute path a service reads or writes (kernel files and / excepted)."""
    for field in msgspec.structs.fields(type(settings)):
        value = getattr(settings, field.name)
        # kubelet_dir only derives the two socket directories, which are set and checked themselves.
        if field.name == "kubelet_dir" or not isinstance(value, str) or not value.startswith("/"):
            continue
        if not paths_used(settings, field.name):
            continue
        path = Path(value)
        if path != Path("/") and not any(path.is_relative_to(provided) for provided in RUNTIME_PROVIDED):
            yield field.name, path


@pytest.mark.parametrize(("directory", "kind", "name", "container_name", "service"), container_cases())
def test_paths_named_by_settings_are_mounted(
    directory: Path, kind: str, name: str, container_name: str, service: str
) -> None:
    objects, obj, container = find_container(directory, kind, name, container_name)
    settings = settings_of(objects, obj, container, service)
    mounts = [Path(mount["mountPath"]) for mount in container.get("volumeMounts", [])]
    for field, path in path_settings(settings):
        assert any(path.is_relative_to(mount) for mount in mounts), (
            f"{container_name}: {env_name(field)}={path} is on no volume (the root filesystem is read-only)"
        )


# --- RBAC and admission ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("directory", BUILDS, ids=build_id)
def test_rbac_grants_no_wildcards_and_no_dangerous_verbs(directory: Path) -> None:
    for role in build(directory):
        if role["kind"] not in ("Role", "ClusterRole"):
            continue
        for rule in role["rules"]:
            for field in ("verbs", "resources", "apiGroups", "resourceNames", "nonResourceURLs"):
                assert "*" not in rule.get(field, []), f"{role['metadata']['name']}: * in {field}"
            assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"]), role["metadata"]["name"]
            assert "secrets" not in rule.get("resources", []), f"{role['metadata']['name']}: no secrets"


# ClusterRoles every cluster has (kube-apiserver's bootstrap policy) that the manifests bind, with their rules.
BUILTIN_CLUSTER_ROLES: dict[str, Obj] = {
    "system:auth-delegator": {
        "kind": "ClusterRole",
        "metadata": {"name": "system:auth-delegator"},
        "rules": [
            {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]},
            {"apiGroups": ["authorization.k8s.io"], "resources": ["subjectaccessreviews"], "verbs": ["create"]},
        ],
    }
}


def grants(objects: list[Obj], service_account: str) -> set[tuple[str, str, str]]:
    """(apiGroup, resource, verb) the ServiceAccount gets from every binding in the build."""
    roles = {(r["kind"], r["metadata"]["name"]): r for r in objects if r["kind"] in ("Role", "ClusterRole")}
    roles |= {("ClusterRole", name): role for name, role in BUILTIN_CLUSTER_ROLES.items()}
    granted: set[tuple[str, str, str]] = set()
    for binding in objects:
        if binding["kind"] not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        if not any(s["kind"] == "ServiceAccount" and s["name"] == service_account for s in binding["subjects"]):
            continue
        role = roles[(binding["roleRef"]["kind"], binding["roleRef"]["name"])]
        for rule in role["rules"]:
            granted |= {(g, r, v) for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}
    return granted


@pytest.mark.parametrize("directory", BUILDS, ids=build_id)
def test_bindings_and_workloads_name_objects_that_exist(directory: Path) -> None:
    objects = build(directory)
    names = {(obj["kind"], obj["metadata"].get("namespace", ""), obj["metadata"]["name"]) for obj in objects}
    for binding in objects:
        if binding["kind"] in ("RoleBinding", "ClusterRoleBinding"):
            ref = binding["roleRef"]
            namespace = binding["metadata"].get("namespace", "") if ref["kind"] == "Role" else ""
            builtin = ref["kind"] == "ClusterRole" and ref["name"] in BUILTIN_CLUSTER_ROLES
            assert builtin or (ref["kind"], namespace, ref["name"]) in names, f"{binding['metadata']['name']}: no {ref}"
            for subject in binding["subjects"]:
                assert ("ServiceAccount", subject["namespace"], subject["name"]) in names, subject
    for obj in objects:
        spec = pod_spec(obj)
        if spec is not None and spec.get("automountServiceAccountToken") is not False:
            account = spec["serviceAccountName"]
            assert ("ServiceAccount", obj["metadata"]["namespace"], account) in names, account
            assert grants(objects, account), f"{account} is bound to no role"


def test_node_agent_writes_only_resource_slices_and_its_drivers_claim_status() -> None:
    node = grants(build(BASE), "gpudra-node")
    writes = {(group, resource) for group, resource, verb in node if verb in WRITE_VERBS}
    assert writes == {("resource.k8s.io", "resourceslices"), ("resource.k8s.io", "resourceclaims/status")}
    # Kubernetes 1.36 also asks for the driver's own entries, and only on claims of the agent's node.
    driver_rules = [
        rule
        for role in build(BASE)
        if role["kind"] == "ClusterRole" and role["metadata"]["name"] == "gpudra-node"
        for rule in role["rules"]
        if rule["resources"] == ["resourceclaims/driver"]
    ]
    assert driver_rules == [
        {
            "apiGroups": ["resource.k8s.io"],
            "resources": ["resourceclaims/driver"],
            "resourceNames": ["gpu.gpudra.io"],
            "verbs": ["associated-node:update", "associated-node:patch"],
        }
    ]
    assert ("resource.k8s.io", "resourceclaims", "get") in node
    assert not {v for g, r, v in node if r == "resourceclaims"} & WRITE_VERBS
    assert ("", "nodes", "get") in node
    assert ("", "nodes", "list") not in node


def test_controller_can_remediate_but_not_publish_devices() -> None:
    controller = grants(build(BASE), "gpudra-controller")
    for needed in [("", "nodes", "patch"), ("", "pods/eviction", "create"), ("", "pods", "delete")]:
        assert needed in controller, needed
    assert not {v for g, r, v in controller if r == "resourceslices"} & WRITE_VERBS


async def test_the_remediation_role_grants_exactly_the_calls_the_controller_makes(
    nats_server: EmbeddedNats, bus: Bus, kube_api: KubeApiServer, tmp_path: Path
) -> None:
    """A device repair (partial drain through the claims, eviction) and a node repair (cordon, taint, full drain,
    a DeleteAfterTimeout pod deleted), against the Kubernetes API test server, which counts every request by
    verb and resource: the ClusterRole must allow each, and nothing else. The server is a 1.36 one serving
    DeviceTaintRules, which the controller follows."""
    kube_api.version = "v1.36.0"
    kube_api.registry.add(DEVICE_TAINT_RULES)
    policy = tmp_path / "drain.yaml"
    policy.write_text("rules:\n  - {mode: DeleteAfterTimeout, namespaces: [batch], timeout: 0}\n")
    add_node(kube_api, "node-a")
    add_pod(kube_api, "node-a", "train", device="gpu-1")
    add_pod(kube_api, "node-a", "job", namespace="batch")
    feed = await Feed.subscribe(bus)
    settings = controller_settings(nats_server.url, kube_api, drain_policy_file=str(policy))
    async with (
        light_node(nats_server.url, tmp_path, "node-a") as node,
        controller_process(settings, reboot=RecordingReboot({"node-a": node})),
    ):
        await bus.publish(health_event("node-a", node.gpu(1), "xid", "48"))
        await feed.expect(RemediationStateChanged, lambda e: e.scope == "device" and e.state == "healthy")
        await bus.publish(health_event("node-a", node.gpu(2), "xid", "79"))
        await feed.expect(RemediationStateChanged, lambda e: e.scope == "node" and e.state == "healthy")
    assert pods_on(kube_api, "node-a") == []
    registry = kube_api.store.registry
    used = {(registry.resolve(res.partition("/")[0]).group, res, verb) for verb, res in kube_api.store.requests}
    role = one(build(BASE), "ClusterRole", "gpudra-remediation")
    allowed = {
        (g, r, v) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]
    }
    assert sorted(used) == sorted(allowed)
    assert used <= grants(build(BASE), "gpudra-controller")


def test_admission_policy_confines_the_node_agent_to_its_own_node() -> None:
    objects = build(BASE)
    daemonset = one(objects, "DaemonSet", "gpudra-node")
    account = daemonset["spec"]["template"]["spec"]["serviceAccountName"]
    user = f"system:serviceaccount:{daemonset['metadata']['namespace']}:{account}"
    policy = one(objects, "ValidatingAdmissionPolicy", "gpudra-resourceslices-own-node")["spec"]
    assert policy["failurePolicy"] == "Fail"
    (rule,) = policy["matchConstraints"]["resourceRules"]
    assert rule["resources"] == ["resourceslices"]
    assert rule["apiGroups"] == ["resource.k8s.io"]
    assert set(rule["operations"]) == {"CREATE", "UPDATE", "DELETE"}
    assert [f'"{user}"' in c["expression"] for c in policy["matchConditions"]] == [True]
    text = yaml.safe_dump(policy)
    assert "authentication.kubernetes.io/node-name" in text
    assert "spec.?nodeName" in text
    binding = one(objects, "ValidatingAdmissionPolicyBinding", "gpudra-resourceslices-own-node")["spec"]
    assert binding["policyName"] == "gpudra-resourceslices-own-node"
    assert binding["validationActions"] == ["Deny"]


def test_the_admission_webhook_is_reached_through_its_service_with_its_secrets_certificate() -> None:
    """kube-apiserver calls the Service the configuration names, on a port that reaches the webhook's; the
    certificate files the settings name come from Secret gpudra-admission-tls; it gets no API access."""
    objects = build(BASE)
    deployment = one(objects, "Deployment", "gpudra-admission")
    ((_, container, service),) = list(gpudra_containers([deployment]))
    settings = settings_of(objects, deployment, container, service)
    assert isinstance(settings, AdmissionSettings)
    assert settings.webhook_host == "0.0.0.0", "kube-apiserver reaches the pod IP"
    (hook,) = one(objects, "ValidatingWebhookConfiguration", "gpudra-opaque-config")["webhooks"]
    reference = hook["clientConfig"]["service"]
    target = one(objects, "Service", reference["name"])
    assert reference["namespace"] == target["metadata"]["namespace"] == deployment["metadata"]["namespace"]
    assert reference["path"] == REVIEW_PATH
    assert target["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    (port,) = [p for p in target["spec"]["ports"] if p["port"] == reference["port"]]
    assert port_number(container, port["targetPort"]) == settings.webhook_port
    annotation = one(objects, "ValidatingWebhookConfiguration", "gpudra-opaque-config")["metadata"]["annotations"]
    assert annotation["cert-manager.io/inject-ca-from"] == f"{reference['namespace']}/{reference['name']}"
    for path, key in ((settings.tls_cert_file, "tls.crt"), (settings.tls_key_file, "tls.key")):
        mount = mount_of(container, path)
        assert mount.get("readOnly") is True
        secret = volume_of(deployment, mount)["secret"]
        assert secret["secretName"] == "gpudra-admission-tls"
        assert {Path(mount["mountPath"]) / item["path"]: item["key"] for item in secret["items"]}[Path(path)] == key
    assert settings.driver_name == "gpu.gpudra.io" == one(objects, "DeviceClass", "gpu.gpudra.io")["metadata"]["name"]
    spec = deployment["spec"]["template"]["spec"]
    assert spec["automountServiceAccountToken"] is False
    assert grants(objects, spec["serviceAccountName"]) == set(), "it reads nothing from the API server"
    assert deployment["spec"]["replicas"] >= 2
    budget = [p for p in by_kind(objects, "PodDisruptionBudget") if p["metadata"]["name"] == "gpudra-admission"]
    assert [p["spec"]["minAvailable"] for p in budget] == [1]


def test_the_webhook_configuration_sends_what_the_webhook_checks_and_fails_open() -> None:
    (hook,) = one(build(BASE), "ValidatingWebhookConfiguration", "gpudra-opaque-config")["webhooks"]
    (rule,) = hook["rules"]
    assert rule["apiGroups"] == ["resource.k8s.io"]
    assert set(rule["resources"]) == set(CHECKED), "the resources decision.py reads configs of"
    assert set(rule["operations"]) == {"CREATE", "UPDATE"}
    assert hook["matchPolicy"] == "Equivalent", "writes through v1beta1 and v1beta2 are converted and sent"
    assert hook["failurePolicy"] == "Ignore", "docs/deploy.md: prepare still refuses a bad config"
    assert (hook["sideEffects"], hook["admissionReviewVersions"]) == ("None", ["v1"])
    assert hook["timeoutSeconds"] <= 5
    assert hook["namespaceSelector"] == hook["objectSelector"] == {}


# --- image, labels, NATS --------------------------------------------------------------------------------------


def test_image_tag_follows_the_project_version() -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    (rule,) = kustomization(BASE)["images"]
    assert rule == {"name": IMAGE, "newTag": version}
    images = {container["image"] for _, container, _ in gpudra_containers(build(BASE))}
    assert images == {f"{IMAGE}:{version}"}


@pytest.mark.parametrize("directory", BUILDS, ids=build_id)
def test_pods_carry_the_label_network_policies_select(directory: Path) -> None:
    for obj in build(directory):
        if obj["kind"] in WORKLOADS:
            labels = obj["spec"]["template"]["metadata"]["labels"]
            assert labels.get("app.kubernetes.io/part-of") == "gpudra", obj["metadata"]["name"]
            assert obj["spec"]["selector"]["matchLabels"].items() <= labels.items(), obj["metadata"]["name"]


def test_base_leaves_nats_to_the_overlays() -> None:
    data = one(build(BASE), "ConfigMap", "gpudra-config")["data"]
    assert "GPUDRA_NATS_URL" not in data


@pytest.mark.parametrize("overlay", OVERLAYS, ids=build_id)
def test_overlays_say_where_nats_is_and_keep_three_replicas(overlay: Path) -> None:
    objects = build(overlay)
    data = one(objects, "ConfigMap", "gpudra-config")["data"]
    assert data["GPUDRA_NATS_URL"]
    ((controller, step, _),) = cli_containers(objects)
    assert load_settings(BusLimits, [], environment(objects, controller, step)).stream_replicas == 3


def test_in_cluster_nats_is_a_three_member_jetstream_cluster_gpudra_can_reach() -> None:
    objects = build(STANDALONE)
    nats = one(objects, "StatefulSet", "gpudra-nats")
    assert nats["spec"]["replicas"] == 3
    headless = one(objects, "Service", nats["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["publishNotReadyAddresses"] is True
    pod_labels = nats["spec"]["template"]["metadata"]["labels"]
    url = one(objects, "ConfigMap", "gpudra-config")["data"]["GPUDRA_NATS_URL"]
    host, port = re.fullmatch(r"tls://([a-z0-9-]+):(\d+)", url).groups()  # type: ignore[union-attr]
    client = one(objects, "Service", host)
    assert client["spec"]["selector"].items() <= pod_labels.items()
    assert int(port) in [p["port"] for p in client["spec"]["ports"]]
    config_volume = next(v for v in nats["spec"]["template"]["spec"]["volumes"] if "configMap" in v)
    conf = one(objects, "ConfigMap", config_volume["configMap"]["name"])["data"]["nats.conf"]
    assert "jetstream" in conf
    routes = re.findall(r"nats://([a-z0-9-]+)\.([a-z0-9-]+):6222", conf)
    service = nats["spec"]["serviceName"]
    assert sorted(routes) == [(f"gpudra-nats-{i}", service) for i in range(3)]
    (container,) = containers(nats)
    assert container["args"] == ["--config", "/etc/nats/nats.conf"]
    assert any(m["mountPath"] == "/etc/nats" and m["name"] == config_volume["name"] for m in container["volumeMounts"])


def nats_permissions() -> dict[str, dict[str, list[str]]]:
    """The subject lists docs/deploy.md gives for the external NATS users, by user (NODE, CONTROLLER,
    BOOTSTRAP) and direction (PUB, SUB): ``NODE_PUB='a,b'`` then ``NODE_PUB="$NODE_PUB"',c'``."""
    found: dict[str, dict[str, list[str]]] = {}
    pattern = r"^\s*([A-Z]+)_(PUB|SUB)=(?:\"\$[A-Z]+_(?:PUB|SUB)\")?'([^']*)'"
    for user, direction, subjects in re.findall(pattern, DOC.read_text(), re.MULTILINE):
        found.setdefault(user, {"PUB": [], "SUB": []})[direction] += [s for s in subjects.split(",") if s]
    return found


def nats_covers(patterns: list[str], subject: str) -> bool:
    """Whether a permission in ``patterns`` covers ``subject``, itself possibly a wildcard subscription: ``*`` is
    one token (and covers a ``*``), ``>`` one or more at the end (and covers anything there)."""
    tokens = subject.split(".")
    for pattern in patterns:
        wanted = pattern.split(".")
        if wanted[-1] == ">":
            if len(tokens) < len(wanted):
                continue
            wanted, tokens_compared = wanted[:-1], tokens[: len(wanted) - 1]
        elif len(wanted) == len(tokens):
            tokens_compared = tokens
        else:
            continue
        if all(w == t or (w == "*" and t != ">") for w, t in zip(wanted, tokens_compared, strict=True)):
            return True
    return False


# Each documented user: the clients that log in with its file, as (principal, roles it holds).
DOCUMENTED_USERS: dict[str, list[tuple[str, frozenset[Role]]]] = {
    "NODE": [(service, frozenset(roles) & NODE_ROLES) for service, roles in SERVICE_ROLES.items()],
    "CONTROLLER": [(service, frozenset(roles) - NODE_ROLES) for service, roles in SERVICE_ROLES.items()],
    "BOOTSTRAP": [(BOOTSTRAP, frozenset(PRINCIPALS[BOOTSTRAP]))],
}


def test_the_documented_nats_users_may_do_what_their_clients_roles_do() -> None:
    """The `nsc` lists for credentials files cover every subject the roles of libs/trust/roles.py publish and
    subscribe to, for the clients that share each file; they are coarser, never narrower."""
    documented = nats_permissions()
    assert set(documented) == set(DOCUMENTED_USERS)
    for user, clients in DOCUMENTED_USERS.items():
        for principal, roles in clients:
            if not roles:
                continue
            granted = permissions(roles, principal=principal, node="gpu-node-7")
            for direction, subjects in (("PUB", granted.publish), ("SUB", granted.subscribe)):
                missing = sorted(s for s in subjects if not nats_covers(documented[user][direction], s))
                assert missing == [], f"{user}_{direction} misses what {principal} ({sorted(roles)}) needs"
    assert not nats_covers(documented["NODE"]["PUB"], "$JS.API.STREAM.CREATE.GPUDRA_HEALTH"), "bootstrap's alone"
    assert not nats_covers(documented["NODE"]["PUB"], "$KV.gpudra_health.n.taints"), "the controller's taints"
    assert not nats_covers(documented["CONTROLLER"]["PUB"], "$KV.someone_elses.key"), "buckets one by one"


def test_external_nats_credentials_and_ca_come_from_the_secret() -> None:
    """Each workload mounts only its own file; JetStream admin (bootstrap.creds) only in the bootstrap step."""
    objects = build(EXTERNAL)
    data = one(objects, "ConfigMap", "gpudra-config")["data"]
    creds, ca = Path(data["GPUDRA_NATS_CREDS"]), Path(data["GPUDRA_NATS_TLS_CA"])
    creds_keys = {"DaemonSet": "node.creds", "Deployment": "controller.creds"}
    checked = set()
    for obj in objects:
        if obj["kind"] not in creds_keys:
            continue
        volumes = {v["name"]: v for v in obj["spec"]["template"]["spec"]["volumes"]}
        for container in containers(obj):
            service = service_of(container)
            if service is not None and not on_the_bus(service):
                continue
            (mount,) = [m for m in container["volumeMounts"] if creds.is_relative_to(m["mountPath"])]
            secret = volumes[mount["name"]]["secret"]
            assert secret["secretName"] == "gpudra-nats-client"
            items = {Path(mount["mountPath"]) / item["path"]: item["key"] for item in secret["items"]}
            bootstrap = (cli_args(container) or [])[:2] == ["bus", "bootstrap"]
            wanted = "bootstrap.creds" if bootstrap else creds_keys[obj["kind"]]
            assert items == {creds: wanted, ca: "ca.crt"}, container["name"]
            assert mount["readOnly"] is True
            checked.add(wanted)
    assert checked == {"node.creds", "controller.creds", "bootstrap.creds"}


# --- NATS logins: the auth callout, tokens, credentials, the bootstrap step ------------------------------------


def expand(text: str, env: dict[str, str]) -> str:
    """The kubelet's ``$(VAR)`` in command and args: replaced when VAR is in the environment, ``$$`` escapes it."""

    def one_reference(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))

    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)", one_reference, text)


def cli_containers(objects: list[Obj]) -> Iterator[tuple[Obj, Obj, list[str]]]:
    """(workload, container, arguments) for every container that runs the ``gpudra`` command."""
    for obj in objects:
        for container in containers(obj):
            args = cli_args(container)
            if args is not None:
                yield obj, container, args


def run_cli_parser(
    objects: list[Obj], obj: Obj, container: Obj, monkeypatch: pytest.MonkeyPatch
) -> tuple[argparse.Namespace, CommonSettings]:
    """What ``gpudra ...`` makes of the container: its arguments as parsed in its environment, and the settings
    it connects with."""
    env = environment(objects, obj, container)
    for name in [name for name in os.environ if name.startswith("GPUDRA_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    argv = [expand(arg, env) for arg in cli_args(container) or []]
    assert not [arg for arg in argv if "$(" in arg], f"{container['name']}: {argv} refers to an unset variable"
    args = cli_parser().parse_args(argv)
    return args, cli_context.settings(args)


def login(settings: CommonSettings, who: str) -> str:
    """How a client logs in to NATS; exactly one way, or nats-py would send the server a mix."""
    ways = {
        "creds": settings.nats_creds,
        "token": settings.nats_token_file,
        "password": settings.nats_user and settings.nats_password_file,
    }
    used = [way for way, value in ways.items() if value]
    assert len(used) == 1, f"{who}: logs in {used or 'anonymously'}; exactly one way is needed"
    return used[0]


def mount_of(container: Obj, path: str) -> Obj:
    """The volume mount a file is on (the deepest one)."""
    found = [m for m in container.get("volumeMounts", []) if Path(path).is_relative_to(m["mountPath"])]
    assert found, f"{container['name']}: {path} is on no volume"
    return max(found, key=lambda m: len(m["mountPath"]))


def volume_of(obj: Obj, mount: Obj) -> Obj:
    volumes: list[Obj] = obj["spec"]["template"]["spec"]["volumes"]
    (volume,) = [v for v in volumes if v["name"] == mount["name"]]
    return volume


def nats_clients(objects: list[Obj]) -> Iterator[tuple[Obj, Obj, str, CommonSettings]]:
    """(workload, container, principal, settings) of every gpudra NATS client: services on the bus and ``gpudra``
    steps. The principal is the client name the connection carries (the service, or ``bootstrap``)."""
    for obj, container, service in gpudra_containers(objects):
        settings = settings_of(objects, obj, container, service)
        if isinstance(settings, CommonSettings):
            yield obj, container, service, settings
    for obj, container, args in cli_containers(objects):
        assert args[:2] == ["bus", BOOTSTRAP], f"{container['name']}: gpudra {args} is not a step deployments run"
        env = environment(objects, obj, container)
        yield obj, container, BOOTSTRAP, load_settings(CommonSettings, [], env)


def callout_settings(objects: list[Obj]) -> tuple[Obj, Obj, CalloutSettings]:
    (found,) = [(obj, c) for obj, c, service in gpudra_containers(objects) if service == CALLOUT_SERVICE]
    settings = settings_of(objects, *found, CALLOUT_SERVICE)
    assert isinstance(settings, CalloutSettings)
    return found[0], found[1], settings


def uses_callout(directory: Path) -> bool:
    return any(service == CALLOUT_SERVICE for _, _, service in gpudra_containers(build(directory)))


@pytest.mark.parametrize("overlay", OVERLAYS, ids=build_id)
def test_every_nats_client_logs_in_and_checks_the_server(overlay: Path) -> None:
    """Nobody is anonymous: one way to log in per container, its file on a read-only volume, TLS to the server.
    Where the callout runs, everyone else presents the pod's token; without it, credentials files."""
    objects = build(overlay)
    expected = "token" if uses_callout(overlay) else "creds"
    seen = set()
    for obj, container, principal, settings in nats_clients(objects):
        who = f"{build_id(overlay)}:{obj['metadata']['name']}/{container['name']}"
        way = login(settings, who)
        assert way == ("password" if principal == CALLOUT_SERVICE else expected), who
        for path in (settings.nats_creds, settings.nats_token_file, settings.nats_password_file, settings.nats_tls_ca):
            if path:
                assert mount_of(container, path).get("readOnly") is True, f"{who}: {path} on a writable volume"
        assert settings.nats_tls_ca, f"{who}: no CA to check the server with"
        assert all(url.startswith("tls://") for url in settings.nats_url.split(",")), f"{who}: {settings.nats_url}"
        seen.add((obj["kind"], principal))
    assert {("DaemonSet", s) for s in NODE_SERVICES} <= seen
    assert {("Deployment", s) for s in CONTROLLER_SERVICES | {BOOTSTRAP}} <= seen


@pytest.mark.parametrize("directory", BUILDS, ids=build_id)
def test_pod_tokens_are_projected_for_the_callout_alone(directory: Path) -> None:
    """Every gpudra pod gets a token of its own ServiceAccount that only the callout accepts (its audience) and
    that expires within the hour (the kubelet renews it); the callout itself needs none."""
    objects = build(directory)
    audience = callout_settings(objects)[2].token_audience if uses_callout(directory) else "gpudra-nats"
    for obj, container, principal, settings in nats_clients(objects):
        if principal == CALLOUT_SERVICE:
            assert not settings.nats_token_file
            continue
        # The base projects it for every client; the overlay decides whether they log in with it.
        path = settings.nats_token_file or "/var/run/secrets/gpudra/nats/token"
        mount = mount_of(container, path)
        assert mount.get("readOnly") is True, container["name"]
        (source,) = volume_of(obj, mount)["projected"]["sources"]
        token = source["serviceAccountToken"]
        assert Path(mount["mountPath"]) / token["path"] == Path(path), container["name"]
        assert token["audience"] == audience, f"{container['name']}: the callout reviews tokens for {audience}"
        assert token["expirationSeconds"] <= 3600, container["name"]


def test_the_callout_gives_each_client_the_roles_of_its_own_service() -> None:
    """GPUDRA_SERVICE_ACCOUNTS against the pods that log in: a node pod's service gets its node roles, a
    controller's its cluster roles, the bootstrap step JetStream admin; the callout's own account none."""
    objects = build(STANDALONE)
    callout, _, settings = callout_settings(objects)
    granted = parse_grants(settings.service_accounts)
    namespace = callout["metadata"]["namespace"]
    assert {ns for ns, _ in granted} == {namespace}, "the setting names namespaces that kustomize does not rewrite"
    assert (namespace, callout["spec"]["template"]["spec"]["serviceAccountName"]) not in granted
    for obj, container, principal, _ in nats_clients(objects):
        if principal == CALLOUT_SERVICE:
            continue
        account = (obj["metadata"]["namespace"], obj["spec"]["template"]["spec"]["serviceAccountName"])
        roles = granted.get(account, frozenset()) & frozenset(PRINCIPALS[principal])
        assert roles, f"{container['name']}: {account} may not act as {principal}"
        if obj["kind"] == "DaemonSet":
            assert roles <= NODE_ROLES, f"{container['name']}: a node gets only node roles, not {roles}"
        else:
            assert not roles & NODE_ROLES, f"{container['name']}: {roles} would tie it to one node"
        assert (principal == BOOTSTRAP) == (Role.BOOTSTRAP in roles), container["name"]
    operator = granted.get((namespace, "gpudra-operator"), frozenset())
    assert operator == {Role.OPERATOR}, "the account `kubectl create token` makes CLI tokens for (docs/deploy.md)"
    one(objects, "ServiceAccount", "gpudra-operator")


def nats_conf(objects: list[Obj]) -> tuple[Obj, Obj, str]:
    nats = one(objects, "StatefulSet", "gpudra-nats")
    (container,) = containers(nats)
    mount = mount_of(container, container["args"][container["args"].index("--config") + 1])
    config = one(objects, "ConfigMap", volume_of(nats, mount)["configMap"]["name"])
    return nats, container, str(config["data"]["nats.conf"])


def secret_env(container: Obj) -> dict[str, tuple[str, str]]:
    """Environment variable -> (Secret, key) of the container's secretKeyRef entries."""
    return {
        e["name"]: (e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
        for e in container.get("env", [])
        if "secretKeyRef" in e.get("valueFrom", {})
    }


def test_in_cluster_nats_sends_every_login_but_the_callouts_to_the_callout() -> None:
    """nats.conf and the callout agree: its user in the callout account, with the password of the Secret
    `gpudra bus callout-secret` prints; the issuer the server trusts is the key the callout signs with; the
    users it makes join an account with JetStream."""
    objects = build(STANDALONE)
    _, nats, conf = nats_conf(objects)
    callout, container, settings = callout_settings(objects)
    block = re.search(r"auth_callout \{([^}]*)\}", conf)
    assert block, "nats.conf has no authorization.auth_callout"
    fields = dict(re.findall(r"(\w+):\s*(.+)", block.group(1)))
    assert fields["account"] == "AUTH"
    assert re.fullmatch(r"\[\s*auth\s*\]", fields["auth_users"].strip())
    assert settings.nats_user == "auth"
    assert re.search(r"AUTH \{ users: \[ \{ user: auth, password: \$AUTH_PASSWORD \} \] \}", conf)
    assert re.search(rf"{settings.target_account} \{{ jetstream: enabled \}}", conf)
    assert re.search(r"system_account: SYS\b", conf)
    assert re.search(r"\bSYS \{ \}", conf)
    issuer_variable = fields["issuer"].strip().removeprefix("$")
    printed = callout_secret("gpudra-system", "gpudra-nats-auth")
    assert printed["metadata"] == {"name": "gpudra-nats-auth", "namespace": callout["metadata"]["namespace"]} | {
        "labels": {"app.kubernetes.io/part-of": "gpudra"}
    }
    keys = set(cast(Obj, printed["data"]))
    assert secret_env(nats) == {
        "AUTH_PASSWORD": ("gpudra-nats-auth", "password"),
        issuer_variable: ("gpudra-nats-auth", "issuer.pub"),
    }
    files: dict[str, str] = {}
    for path in (settings.issuer_seed_file, settings.nats_password_file):
        secret = volume_of(callout, mount_of(container, path))["secret"]
        assert secret["secretName"] == "gpudra-nats-auth"
        files |= {item["path"]: item["key"] for item in secret["items"]}
    assert files == {
        Path(settings.issuer_seed_file).name: "issuer.nk",
        Path(settings.nats_password_file).name: "password",
    }
    assert set(files.values()) | {"issuer.pub"} == keys, "the callout mounts the signing key, never the server's half"
    assert callout["spec"]["replicas"] >= 2, "no client logs in while no callout runs"
    budget = [
        p
        for p in by_kind(objects, "PodDisruptionBudget")
        if p["spec"]["selector"]["matchLabels"].items() <= callout["spec"]["template"]["metadata"]["labels"].items()
    ]
    assert [p["spec"].get("minAvailable") for p in budget] == [1]


def test_in_cluster_nats_serves_clients_over_tls_with_the_secrets_certificate() -> None:
    """The server's certificate and key from Secret gpudra-nats-tls; clients get only its ca.crt."""
    objects = build(STANDALONE)
    nats, container, conf = nats_conf(objects)
    block = re.search(r"^tls \{([^}]*)\}", conf, re.MULTILINE)
    assert block, "nats.conf has no top-level tls block: clients would speak plain TCP"
    tls = dict(re.findall(r"(\w+):\s*(\S+)", block.group(1)))
    for field, key in (("cert_file", "tls.crt"), ("key_file", "tls.key")):
        mount = mount_of(container, tls[field])
        secret = volume_of(nats, mount)["secret"]
        assert secret["secretName"] == "gpudra-nats-tls"
        assert {Path(mount["mountPath"]) / i["path"]: i["key"] for i in secret["items"]}[Path(tls[field])] == key
    for obj, client, principal, settings in nats_clients(objects):
        secret = volume_of(obj, mount_of(client, settings.nats_tls_ca))["secret"]
        assert secret["secretName"] == "gpudra-nats-tls", client["name"]
        assert [item["key"] for item in secret["items"]] == ["ca.crt"], f"{client['name']}: the CA only"
        assert urlsplit(settings.nats_url).hostname == "gpudra-nats", f"{principal}: the name the certificate carries"


@pytest.mark.parametrize("directory", BUILDS, ids=build_id)
def test_only_the_callout_reviews_tokens(directory: Path) -> None:
    objects = build(directory)
    review = ("authentication.k8s.io", "tokenreviews", "create")
    reviewers = {
        sa["metadata"]["name"]
        for sa in by_kind(objects, "ServiceAccount")
        if review in grants(objects, sa["metadata"]["name"])
    }
    if not uses_callout(directory):
        assert reviewers == set()
        return
    callout, _, _ = callout_settings(objects)
    account = callout["spec"]["template"]["spec"]["serviceAccountName"]
    assert reviewers == {account}
    bindings = [
        b
        for b in objects
        if b["kind"] in ("RoleBinding", "ClusterRoleBinding") and any(s["name"] == account for s in b["subjects"])
    ]
    assert [(b["kind"], b["roleRef"]["kind"], b["roleRef"]["name"]) for b in bindings] == [
        ("ClusterRoleBinding", "ClusterRole", "system:auth-delegator")
    ]


@pytest.mark.parametrize("directory", BUILDS, ids=build_id)
def test_the_controller_bootstraps_the_bus_before_it_starts(directory: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Services find streams and buckets made or exit: the controller's init step makes them, on the overlay's
    NATS with its replica count, and nothing else runs the ``gpudra`` command."""
    objects = build(directory)
    controller = one(objects, "Deployment", "gpudra-controller")
    steps = list(cli_containers(objects))
    assert [(obj["metadata"]["name"], c["name"]) for obj, c, _ in steps] == [("gpudra-controller", "bootstrap")]
    assert [c["name"] for c in controller["spec"]["template"]["spec"]["initContainers"]] == ["bootstrap"]
    _, container, _ = steps[0]
    assert [e for e in container.get("env", []) if e["name"] == "GPUDRA_NODE_NAME"] == [
        {"name": "GPUDRA_NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}
    ]
    if directory == BASE:
        return  # no NATS to name yet
    env = environment(objects, controller, container)
    unknown = {name for name in env if name.startswith("GPUDRA_")} - bootstrap_env_names()
    assert not unknown, f"gpudra bus bootstrap has no settings {sorted(unknown)}"
    load_settings(BusLimits, [], env)
    args, settings = run_cli_parser(objects, controller, container, monkeypatch)
    assert args.run is run_bootstrap
    assert settings.nats_url == one(objects, "ConfigMap", "gpudra-config")["data"]["GPUDRA_NATS_URL"]
    mounts = [Path(m["mountPath"]) for m in container.get("volumeMounts", [])]
    for _, path in path_settings(settings):
        assert any(path.is_relative_to(mount) for mount in mounts), f"bootstrap: {path} is on no volume"


def test_every_nats_client_may_pass_the_network_policy() -> None:
    """Logins are the gate; the policy is a second fence that must not shut gpudra's own clients out (the
    callout included), and no egress rule may keep the callout from the API server."""
    objects = build(STANDALONE)
    policies = by_kind(objects, "NetworkPolicy")
    nats_labels = one(objects, "StatefulSet", "gpudra-nats")["spec"]["template"]["metadata"]["labels"]
    (policy,) = [p for p in policies if p["spec"]["podSelector"]["matchLabels"].items() <= nats_labels.items()]
    client_rules = [r for r in policy["spec"]["ingress"] if {"port": "client"} in r["ports"]]
    for obj, container, _, _ in nats_clients(objects):
        labels = obj["spec"]["template"]["metadata"]["labels"]
        assert any(
            peer["podSelector"]["matchLabels"].items() <= labels.items()
            for rule in client_rules
            for peer in rule["from"]
        ), f"{obj['metadata']['name']}/{container['name']} may not reach NATS"
    (routes,) = [r for r in policy["spec"]["ingress"] if {"port": "cluster"} in r["ports"]]
    assert [peer["podSelector"]["matchLabels"] for peer in routes["from"]] == [
        {"app.kubernetes.io/name": "gpudra-nats"}
    ]
    assert not [p for p in policies if "Egress" in p["spec"].get("policyTypes", [])]


# --- the in-cluster overlay, run: nats-server, the callout and every client, with the overlay's own files ----


Secrets = dict[str, dict[str, bytes]]


class PodFiles:
    """What the kubelet would mount into one container, under a local directory: Secrets, ConfigMaps, projected
    tokens, empty directories. ``local`` rewrites a path the container sees into the local one."""

    def __init__(
        self, root: Path, objects: list[Obj], obj: Obj, container: Obj, *, secrets: Secrets, token: str
    ) -> None:
        volumes = {v["name"]: v for v in obj["spec"]["template"]["spec"].get("volumes", [])}
        self.mounts: dict[str, Path] = {}
        for mount in container.get("volumeMounts", []):
            local = root / f"{container['name']}-{mount['name']}"
            local.mkdir(parents=True, exist_ok=True)
            volume = volumes.get(mount["name"], {})
            if "secret" in volume:
                data = secrets[volume["secret"]["secretName"]]
                for item in volume["secret"]["items"]:
                    (local / item["path"]).write_bytes(data[item["key"]])
            elif "configMap" in volume:
                for key, value in one(objects, "ConfigMap", volume["configMap"]["name"])["data"].items():
                    (local / key).write_text(value)
            elif "projected" in volume:
                for source in volume["projected"]["sources"]:
                    (local / source["serviceAccountToken"]["path"]).write_text(token)
            self.mounts[mount["mountPath"]] = local

    def local(self, text: str) -> str:
        if not self.mounts:
            return text
        paths = "|".join(re.escape(path) for path in sorted(self.mounts, key=len, reverse=True))
        return re.sub(rf"(?<![\w.-])({paths})(?![\w.-])", lambda m: str(self.mounts[m.group(1)]), text)


ROUTE_NAMES = (
    "*.gpudra-nats-headless",
    "*.gpudra-nats-headless.gpudra-system",
    "*.gpudra-nats-headless.gpudra-system.svc",
    "*.gpudra-nats-headless.gpudra-system.svc.cluster.local",
)
"""The names docs/deploy.md has the routes' certificate carry: every member's, through the headless Service."""


def documented_secrets() -> Secrets:
    """The three Secrets docs/deploy.md has you create: `gpudra bus callout-secret`'s, a certificate for the
    client Service's name (here also for 127.0.0.1, where the test server listens), and the members' certificate
    for the routes, of a CA of its own (here also for localhost, where the test's members route to each other)."""
    printed = cast(dict[str, str], callout_secret("gpudra-system", "gpudra-nats-auth")["data"])
    return {
        "gpudra-nats-auth": {key: base64.b64decode(value) for key, value in printed.items()},
        "gpudra-nats-tls": tls_secret(trustme.CA(), "gpudra-nats", "127.0.0.1"),
        "gpudra-nats-routes-tls": tls_secret(trustme.CA(), *ROUTE_NAMES, "localhost"),
    }


def tls_secret(ca: trustme.CA, *names: str) -> dict[str, bytes]:
    """A kubernetes.io/tls Secret's data with ``ca.crt``, as cert-manager's CA issuer writes it; trustme's
    certificates are for server and client auth both."""
    issued = ca.issue_cert(*names)
    return {
        "tls.crt": issued.cert_chain_pems[0].bytes(),
        "tls.key": issued.private_key_pem.bytes(),
        "ca.crt": ca.cert_pem.bytes(),
    }


class InClusterRun:
    """The overlay's pods as local processes and connections: their files, their settings, their tokens."""

    def __init__(self, objects: list[Obj], kube_api: KubeApiServer, root: Path) -> None:
        self.objects = objects
        self.kube_api = kube_api
        self.root = root
        self.secrets = documented_secrets()
        self.port = free_port()
        self.url = f"tls://127.0.0.1:{self.port}"
        self._tokens: dict[str, str] = {}

    def token(self, obj: Obj, audience: str) -> str:
        """The projected token of this workload's pod on the sample node, as the API server issues it."""
        name = obj["metadata"]["name"]
        if name not in self._tokens:
            spec, namespace = obj["spec"]["template"]["spec"], obj["metadata"]["namespace"]
            node = SAMPLE_FIELDS["spec.nodeName"]
            pod = self.kube_api.store.create(
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {"name": f"{name}-x2v9q", "namespace": namespace},
                    "spec": {
                        "nodeName": node,
                        "serviceAccountName": spec["serviceAccountName"],
                        "containers": [{"name": "c", "image": "i"}],
                    },
                }
            )
            self._tokens[name] = self.kube_api.tokens.issue(
                namespace,
                spec["serviceAccountName"],
                audiences=(audience,),
                node=node,
                pod=pod["metadata"]["name"],
                pod_uid=pod["metadata"]["uid"],
            )
        return self._tokens[name]

    def settings(self, obj: Obj, container: Obj, settings_type: type[S], token: str = "") -> S:
        """The container's settings, its files written locally and the client Service replaced by the server."""
        files = PodFiles(
            self.root / obj["metadata"]["name"], self.objects, obj, container, secrets=self.secrets, token=token
        )
        env = environment(self.objects, obj, container)
        local = {name: files.local(value).replace("tls://gpudra-nats:4222", self.url) for name, value in env.items()}
        return load_settings(settings_type, [], local)

    @contextlib.asynccontextmanager
    async def nats(self) -> AsyncIterator[None]:
        """nats-server with the overlay's nats.conf and environment, but alone: no routes to absent members."""
        statefulset, container, conf = nats_conf(self.objects)
        files = PodFiles(self.root / "nats", self.objects, statefulset, container, secrets=self.secrets, token="")
        conf = re.sub(r"^cluster \{.*?^\}\n", "", files.local(conf), flags=re.DOTALL | re.MULTILINE)
        conf = conf.replace("listen: 0.0.0.0:4222", f"listen: 127.0.0.1:{self.port}")
        conf = conf.replace("http: 0.0.0.0:8222", "http: 127.0.0.1:0")
        assert "cluster {" not in conf
        assert f":{self.port}" in conf
        (self.root / "nats.conf").write_text(conf)
        env = {name: self.secrets[secret][key].decode() for name, (secret, key) in secret_env(container).items()}
        env |= {"SERVER_NAME": "gpudra-nats-0"}
        log = self.root / "nats.log"
        with log.open("wb") as output:
            server = await asyncio.create_subprocess_exec(
                nats_server_binary(), "-c", str(self.root / "nats.conf"), env=env, stdout=output, stderr=output
            )
        try:
            async with asyncio.timeout(15):
                while True:
                    assert server.returncode is None, f"nats-server exited: {log.read_text()}"
                    try:
                        _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                    except OSError:
                        await asyncio.sleep(0.05)
                        continue
                    writer.close()
                    break
            yield
        finally:
            server.terminate()
            await server.wait()

    @contextlib.asynccontextmanager
    async def callout(self) -> AsyncIterator[CalloutSettings]:
        """The callout with its Deployment's settings; the API server is the test's (in a pod: the pod's)."""
        obj, container, _ = callout_settings(self.objects)
        settings = self.settings(obj, container, CalloutSettings)
        settings = msgspec.structs.replace(settings, kubeconfig=self.kube_api.url)
        bus = await Bus.connect(settings, CALLOUT_SERVICE)
        try:
            async with callout_lifespan(bus, settings):
                yield settings
        finally:
            await bus.close()


@pytest.mark.slow
async def test_in_cluster_overlay_admits_every_workload_through_its_callout(
    kube_api: KubeApiServer, tmp_path: Path
) -> None:
    """nats-server with the overlay's nats.conf (minus routes to members that are not there), the Secrets the docs
    have you create, the callout with its Deployment's settings, and each client with its container's settings
    and its pod's token: the bootstrap step makes the bus, every service registers as itself, and a token made
    with `kubectl create token gpudra-operator` lists them."""
    run = InClusterRun(build(STANDALONE), kube_api, tmp_path)
    buses: list[Bus] = []
    async with run.nats(), run.callout() as callout:
        try:
            controller = one(run.objects, "Deployment", "gpudra-controller")
            (step,) = controller["spec"]["template"]["spec"]["initContainers"]
            token = run.token(controller, callout.token_audience)
            bootstrap = await Bus.connect(run.settings(controller, step, CommonSettings, token), BOOTSTRAP)
            buses.append(bootstrap)
            limits = run.settings(controller, step, BusLimits, token)
            # One server here; the overlay's three replicas need its three members.
            await bootstrap.bootstrap(msgspec.structs.replace(limits, stream_replicas=1))
            served = []
            for obj, container, service in gpudra_containers(run.objects):
                if service == CALLOUT_SERVICE or not on_the_bus(service):
                    continue
                token = run.token(obj, callout.token_audience)
                settings = run.settings(obj, container, service_settings()[service], token)
                assert isinstance(settings, CommonSettings)
                bus = await Bus.connect(settings, service)
                buses.append(bus)
                await bus.serve(VERSION)  # nats.micro: $SRV.*.<service>, allowed for its own service only
                await bus.nc.flush()
                assert bus.link.refusals == [], f"{obj['metadata']['name']}/{container['name']}"
                served.append(service)
            token_file, ca_file = tmp_path / "operator.token", tmp_path / "ca.crt"
            token_file.write_text(kube_api.tokens.issue("gpudra-system", "gpudra-operator", audiences=("gpudra-nats",)))
            ca_file.write_bytes(run.secrets["gpudra-nats-tls"]["ca.crt"])
            operator_settings = CommonSettings(
                nats_url=run.url, nats_token_file=str(token_file), nats_tls_ca=str(ca_file)
            )
            operator = await Bus.connect(operator_settings, "operator")
            buses.append(operator)
            assert sorted(info.name for info in await list_services(operator.nc)) == sorted(served)
        finally:
            for bus in reversed(buses):
                await bus.close()
