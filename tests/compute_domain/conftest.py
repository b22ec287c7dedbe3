"""The test API server with the shipped ComputeDomain CRD installed (through the API, as kubectl would)."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from kubernetes_asyncio.client import ApiextensionsV1Api

from tests.compute_domain.test_cd_api import CRD_FILE
from tests.support.kubeapi import KubeApiServer


@pytest.fixture
async def installed(kube_api: KubeApiServer) -> KubeApiServer:
    async with kube_api.api_client() as client:
        crds: Any = ApiextensionsV1Api(client)
        await crds.create_custom_resource_definition(yaml.safe_load(CRD_FILE.read_text()))
    return kube_api
