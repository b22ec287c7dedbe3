"""The chaos soak, short form: the whole standalone system keeps its promises while its processes are killed.

The long form, with figures, is ``python -m bench chaos`` (docs/benchmarks.md).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cli.up import SERVICES
from tests.chaos.chaos_support import SoakPlan, running_system

pytestmark = pytest.mark.slow


@pytest.mark.timeout(300)
async def test_kills_of_every_process_lose_nothing_and_leak_nothing(tmp_path: Path) -> None:
    async with running_system(tmp_path) as soak:
        report = await soak.run(SoakPlan(cycles=300, faults=20, kills=6, cycles_between_kills=(5, 30), seed=7))
    print(report.summary())
    assert report.problems == []
    assert set(report.kills) == {*SERVICES, "nats-server"}, report.summary()
    assert report.health["verdicts"] > 0
