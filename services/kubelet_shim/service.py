"""Wiring of kubelet_shim: registered on the bus; the gRPC sockets come with the kubelet-face issue."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from libs.bus import Bus, Endpoint
from services.kubelet_shim.settings import Settings


@asynccontextmanager
async def lifespan(bus: Bus, settings: Settings) -> AsyncIterator[Sequence[Endpoint[Any]]]:
    yield []
