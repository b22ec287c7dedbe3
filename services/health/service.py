"""Wiring of health: registered on the bus; monitors and remediation come with the health issue."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from libs.bus import Bus, Endpoint
from services.health.settings import Settings


@asynccontextmanager
async def lifespan(bus: Bus, settings: Settings) -> AsyncIterator[Sequence[Endpoint[Any]]]:
    yield []
