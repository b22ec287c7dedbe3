"""/version and the discovery documents, as kubernetes-asyncio's clients read them."""

from __future__ import annotations

from pathlib import Path

from kubernetes_asyncio import config
from kubernetes_asyncio.client import ApiClient, ApisApi, Configuration, CoreApi, VersionApi
from kubernetes_asyncio.dynamic import DynamicClient

from tests.kubeapi.objects import resource_slice
from tests.support.kubeapi import KubeApiServer


async def test_version_is_settable(client: ApiClient, kube_api: KubeApiServer) -> None:
    assert (await VersionApi(client).get_code()).git_version == "v1.34.0"
    kube_api.version = "v1.35.2"
    info = await VersionApi(client).get_code()
    assert (info.git_version, info.major, info.minor) == ("v1.35.2", "1", "35")


async def test_group_discovery(client: ApiClient) -> None:
    versions = await CoreApi(client).get_api_versions()
    groups = await ApisApi(client).get_api_versions()
    assert versions.versions == ["v1"]
    assert {g.name for g in groups.groups} == {
        "coordination.k8s.io",
        "events.k8s.io",
        "resource.k8s.io",
        "admissionregistration.k8s.io",
        "apiextensions.k8s.io",
    }


async def test_dynamic_client_finds_and_uses_resources(
    client: ApiClient, kube_api: KubeApiServer, tmp_path: Path
) -> None:
    dynamic = await DynamicClient(client, cache_file=str(tmp_path / "discovery.json"))  # default: a file in /tmp
    slices = await dynamic.resources.get(api_version="resource.k8s.io/v1", kind="ResourceSlice")
    await dynamic.create(slices, body=resource_slice("s", "node-1"))
    pods = await dynamic.resources.get(api_version="v1", kind="Pod")
    assert pods.namespaced
    assert kube_api.store.get("resourceslices", "s") is not None


async def test_kubeconfig_points_a_loaded_configuration_here(kube_api: KubeApiServer) -> None:
    configuration = Configuration()
    await config.load_kube_config_from_dict(kube_api.kubeconfig(), client_configuration=configuration)
    async with ApiClient(configuration=configuration) as loaded:
        assert (await VersionApi(loaded).get_code()).git_version == "v1.34.0"
