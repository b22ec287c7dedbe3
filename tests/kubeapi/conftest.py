"""Client fixtures for the API test server's own tests.

The API objects are typed ``Any`` on purpose: kubernetes-asyncio's stubs declare model
bodies and omit ``_content_type``, while the client accepts plain dicts and the keyword at
runtime, and these tests send dicts. The ``kube_api`` fixture itself comes from
tests.support.kubeapi_fixture (registered in tests/conftest.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest_asyncio
from kubernetes_asyncio.client import ApiClient, CoordinationV1Api, CoreV1Api, CustomObjectsApi, ResourceV1Api

from tests.support.kubeapi import KubeApiServer


@pytest_asyncio.fixture
async def client(kube_api: KubeApiServer) -> AsyncIterator[ApiClient]:
    async with kube_api.api_client() as api_client:
        yield api_client


@pytest_asyncio.fixture
async def core(client: ApiClient) -> Any:
    return CoreV1Api(client)


@pytest_asyncio.fixture
async def res(client: ApiClient) -> Any:
    return ResourceV1Api(client)


@pytest_asyncio.fixture
async def leases(client: ApiClient) -> Any:
    return CoordinationV1Api(client)


@pytest_asyncio.fixture
async def custom_api(client: ApiClient) -> Any:
    return CustomObjectsApi(client)
