"""A remediation controller in a process of its own, for kill -9 tests.

``python -m tests.health_controller.health_controller_crash_child SETTINGS_JSON``: runs the controller with
these settings, prints ``READY`` once it consumes, and runs until killed.
"""

from __future__ import annotations

import asyncio
import sys

import msgspec

from services.health.settings import Settings
from tests.health_controller.health_controller_support import controller_process


async def main(settings: Settings) -> None:
    async with controller_process(settings):
        print("READY", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(msgspec.json.decode(sys.argv[1], type=Settings)))
