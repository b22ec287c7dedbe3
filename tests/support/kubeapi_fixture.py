"""Pytest plugin: the ``kube_api`` fixture, a KubeApiServer running for one test.

Register with ``pytest_plugins = ["tests.support.kubeapi_fixture"]`` in a conftest.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from tests.support.kubeapi import KubeApiServer


@pytest_asyncio.fixture
async def kube_api() -> AsyncIterator[KubeApiServer]:
    """A fresh API server on 127.0.0.1 (free port), Kubernetes v1.34.0; set ``kube_api.version`` to change."""
    async with KubeApiServer() as server:
        yield server
