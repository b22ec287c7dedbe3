"""The ten-line extender example in docs/events.md runs as printed, with plain nats-py only."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

from libs.bus import Bus
from libs.events.catalogue import ClaimPrepared, ClaimRef
from libs.natsserver import EmbeddedNats
from libs.trust.roles import Role
from tests.support.nats_fixture import role_creds

DOC = Path(__file__).resolve().parents[2] / "docs" / "events.md"


def example() -> str:
    [code] = re.findall(r"## Ten lines, plain nats-py\n\n```python\n(.*?)```", DOC.read_text(), re.S)
    return str(code)


def test_example_is_short_and_needs_no_gpudra_code() -> None:
    code = example()
    assert "gpudra" not in code.replace('"gpudra.v1.', "")
    assert len([line for line in code.splitlines() if line.strip()]) <= 12


async def test_example_prints_events(tmp_path: Path, bus: Bus, nats_server: EmbeddedNats) -> None:
    script = tmp_path / "extension.py"
    script.write_text(example())
    creds = role_creds(nats_server.url, "extender", [Role.EXTENDER], "node-a")
    env = {**os.environ, "NATS_URL": nats_server.url, "NATS_CREDS": creds}
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(script), env=env, stdout=asyncio.subprocess.PIPE, cwd=tmp_path
    )
    try:
        claim = ClaimRef(namespace="default", name="train", uid="uid-42")
        await bus.publish(ClaimPrepared(node="node-a", claim=claim, devices=[]))
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 20)).decode()
    finally:
        process.kill()
        await process.wait()
    assert line.startswith("io.gpudra.ClaimPrepared.v1 uid-42 {")
    assert "'uid': 'uid-42'" in line
