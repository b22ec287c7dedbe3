"""Wiring of claim_preparation: registered on the bus; claim preparation comes with the kubelet-face issue."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from libs.bus import Bus, Endpoint
from services.claim_preparation.settings import Settings


@asynccontextmanager
async def lifespan(bus: Bus, settings: Settings) -> AsyncIterator[Sequence[Endpoint[Any]]]:
    yield []
