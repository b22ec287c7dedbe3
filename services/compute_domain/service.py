"""Wiring of compute_domain: registered on the bus; compute domains come with their own issue."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from libs.bus import Bus, Endpoint
from services.compute_domain.settings import Settings


@asynccontextmanager
async def lifespan(bus: Bus, settings: Settings) -> AsyncIterator[Sequence[Endpoint[Any]]]:
    yield []
