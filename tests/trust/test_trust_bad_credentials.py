"""Credentials that cannot work end a service's start at once, with one line saying which file or subject and
what to do, and a non-zero exit: missing, damaged, expired, refused by the server, or the wrong role's."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest

from libs.natsserver import EmbeddedNats
from libs.runtime.startup import EXIT_PERMISSION
from libs.trust.roles import Role
from tests.support.nats_fixture import role_creds, serve_with_auth, service_env

EXIT_BUS = 1


async def run_discovery(env: dict[str, str], tmp_path: Path) -> tuple[int, dict[str, object]]:
    """``python -m services.discovery`` until it exits; its exit code and last log line."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.discovery",
        env={
            **os.environ,
            "GPUDRA_BACKEND": "simulated",
            "GPUDRA_STATE_DIR": str(tmp_path / "state"),
            "GPUDRA_METRICS_PORT": "-1",
            "GPUDRA_KUBE_MODE": "local",
            "OTEL_SDK_DISABLED": "true",
            **env,
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    lines = out.decode().splitlines()
    assert not [line for line in lines if "Traceback" in line], lines
    return process.returncode or 0, json.loads(lines[-1])


@pytest.mark.parametrize(
    ("damage", "says"),
    [
        ("missing", "does not exist (setting --nats-creds / GPUDRA_NATS_CREDS)"),
        ("junk", "is not a credentials file"),
        ("expired", "expired at"),
    ],
)
async def test_unusable_credentials_stop_the_start(
    nats_server: EmbeddedNats, tmp_path: Path, damage: str, says: str
) -> None:
    env = service_env(nats_server.url, "node-a", "discovery")
    path = tmp_path / f"{damage}.creds"
    if damage == "junk":
        path.write_text("-----BEGIN NATS USER JWT-----\nnot a jwt\n")
    elif damage == "expired":
        path = Path(role_creds(nats_server.url, "discovery", [Role.DISCOVERY], "node-a", lifetime=-5))
    env["GPUDRA_NATS_CREDS"] = str(path)
    code, last = await run_discovery(env, tmp_path)
    assert code == EXIT_BUS
    assert says in str(last["msg"])
    assert str(path) in str(last["msg"])


async def test_credentials_the_server_does_not_know_are_refused_at_connect(tmp_path: Path) -> None:
    """Issued by another system's authority: valid in form, refused by this server."""
    ours = serve_with_auth(EmbeddedNats(tmp_path / "ours"), tmp_path / "ours-trust")
    theirs = serve_with_auth(EmbeddedNats(tmp_path / "theirs"), tmp_path / "theirs-trust")
    await ours.start()
    try:
        env = service_env(ours.url, "node-a", "discovery")
        env["GPUDRA_NATS_CREDS"] = role_creds(theirs.url, "discovery", [Role.DISCOVERY], "node-a")
        code, last = await run_discovery(env, tmp_path)
    finally:
        await ours.stop()
    assert code == EXIT_BUS
    assert "Authorization Violation" in str(last["msg"])
    assert "refused these credentials" in str(last["msg"])


async def test_the_wrong_roles_credentials_stop_the_start_naming_the_subject(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    """Discovery started with the kubelet shim's credentials: the server refuses its first write."""
    env = service_env(nats_server.url, "node-a", "discovery")
    env["GPUDRA_NATS_CREDS"] = role_creds(nats_server.url, "discovery", [Role.KUBELET_SHIM], "node-a")
    code, last = await run_discovery(env, tmp_path)
    assert code == EXIT_PERMISSION
    assert "NATS refused permissions violation" in str(last["msg"])
    assert "lack a permission it needs" in str(last["msg"])


async def test_another_nodes_credentials_stop_the_start(nats_server: EmbeddedNats, tmp_path: Path) -> None:
    env = service_env(nats_server.url, "node-a", "discovery")
    env["GPUDRA_NATS_CREDS"] = role_creds(nats_server.url, "discovery", [Role.DISCOVERY], "node-b")
    code, last = await run_discovery(env, tmp_path)
    assert code == EXIT_PERMISSION
    assert "node-a" in str(last["msg"])
