"""Wiring of discovery: registered on the bus; inventory and slices come with the discovery issue."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from libs.bus import Bus, Endpoint
from services.discovery.settings import Settings


@asynccontextmanager
async def lifespan(bus: Bus, settings: Settings) -> AsyncIterator[Sequence[Endpoint[Any]]]:
    yield []
