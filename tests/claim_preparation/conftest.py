"""Fixtures of the claim_preparation tests: settings in the test's temp dir, the store, the running service."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from libs.bus import Bus
from libs.kube import KubeApi, LocalKube
from libs.natsserver import EmbeddedNats
from services.claim_preparation.service import ClaimService
from services.claim_preparation.settings import Settings
from tests.claim_preparation.claim_prep_support import (
    EventLog,
    claim_events,
    service_settings,
    serving,
    until_answering,
)


@pytest.fixture
def settings(tmp_path: Path, nats_server: EmbeddedNats) -> Settings:
    return service_settings(tmp_path, nats_server.url)


@pytest.fixture
async def kube(bus: Bus) -> KubeApi:
    return await LocalKube.open(bus.js)


@pytest.fixture
async def events(bus: Bus) -> AsyncIterator[EventLog]:
    async with claim_events(bus) as log:
        yield log


@pytest.fixture
async def service(nats_server: EmbeddedNats, settings: Settings, bus: Bus) -> AsyncIterator[ClaimService]:
    """Running and serving; depends on ``bus`` so the streams and the store bucket exist first."""
    async with serving(nats_server.url, settings) as running:
        await until_answering(bus)
        yield running
