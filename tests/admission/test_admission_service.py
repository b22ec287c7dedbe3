"""The webhook over real HTTPS: a TLS client that checks the certificate, reviews in and out, garbage refused with
400, every answer counted, a renewed certificate served without a restart, and the process itself as its
Deployment starts it (settings from the environment, probes, logs naming the claim, SIGTERM)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import ssl
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme
from prometheus_client import REGISTRY

from libs.natsserver import free_port
from libs.runtime.startup import EXIT_CONFIG, StartupError
from libs.settings import SettingsError, load_settings
from services.admission.service import running
from services.admission.settings import Settings
from tests.admission.admission_support import (
    Authority,
    Obj,
    gpu_config,
    opaque,
    resource_claim,
    review,
    webhook,
    webhook_settings,
)

ROOT = Path(__file__).resolve().parents[2]
BAD_CLAIM = resource_claim("train-0", opaque(gpu_config(sharing={"strategy": "MPS", "mpsConfg": {}})))


def counted(resource: str, outcome: str) -> float:
    return (
        REGISTRY.get_sample_value("gpudra_admission_reviews_total", {"resource": resource, "outcome": outcome}) or 0.0
    )


async def post(url: str, trust: ssl.SSLContext, body: bytes) -> tuple[int, bytes]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=body, ssl=trust, headers={"Content-Type": "application/json"}) as response,
    ):
        return response.status, await response.read()


async def ask(url: str, trust: ssl.SSLContext, body: Obj) -> Obj:
    status, answer = await post(url, trust, json.dumps(body).encode())
    assert status == 200, answer
    decoded: Obj = json.loads(answer)
    assert (decoded["apiVersion"], decoded["kind"]) == ("admission.k8s.io/v1", "AdmissionReview")
    response: Obj = decoded["response"]
    assert response["uid"] == body["request"]["uid"]
    return response


async def test_reviews_are_answered_over_https(tmp_path: Path) -> None:
    authority = Authority.issue(tmp_path)
    refused, allowed = counted("resourceclaims", "refused"), counted("resourceclaims", "allowed")
    async with webhook(authority) as served:
        good = await ask(served.url, authority.client_context(), review(resource_claim("ok", opaque(gpu_config()))))
        bad = await ask(served.url, authority.client_context(), review(BAD_CLAIM))
    assert good == {"uid": good["uid"], "allowed": True}
    assert bad["allowed"] is False
    assert bad["status"]["code"] == 422
    assert bad["status"]["message"] == (
        "ResourceClaim default/train-0: spec.devices.config[0].opaque.parameters: "
        "GpuConfig: unknown field sharing.mpsConfg"
    )
    assert counted("resourceclaims", "refused") == refused + 1
    assert counted("resourceclaims", "allowed") == allowed + 1


@pytest.mark.parametrize(
    "body",
    [b"", b"<html>", b'{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}'],
    ids=["empty", "not-json", "no-request"],
)
async def test_what_is_not_a_review_gets_400_saying_why(tmp_path: Path, body: bytes) -> None:
    authority = Authority.issue(tmp_path)
    before = counted("", "bad_request")
    async with webhook(authority) as served:
        status, text = await post(served.url, authority.client_context(), body)
    assert status == 400
    assert text.decode().startswith(("not JSON", "not an admission.k8s.io/v1 AdmissionReview"))
    assert counted("", "bad_request") == before + 1


async def test_a_client_that_does_not_trust_the_ca_is_refused_by_tls(tmp_path: Path) -> None:
    authority = Authority.issue(tmp_path)
    stranger = ssl.create_default_context()
    trustme.CA().configure_trust(stranger)
    async with webhook(authority) as served:
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await post(served.url, stranger, b"{}")


async def test_a_renewed_certificate_is_served_without_a_restart(tmp_path: Path) -> None:
    """cert-manager renews, the kubelet swaps the Secret's files: new connections get the new certificate."""
    authority = Authority.issue(tmp_path)
    async with webhook(authority, reload_seconds=0.05) as served:
        renewed = Authority(trustme.CA(), authority.cert_file, authority.key_file)
        renewed.renew()
        body = review(resource_claim("ok"))
        async with asyncio.timeout(10):
            while True:
                try:
                    await ask(served.url, renewed.client_context(), body)
                    break
                except aiohttp.ClientConnectorCertificateError:
                    await asyncio.sleep(0.05)
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await post(served.url, authority.client_context(), b"{}")


async def test_a_certificate_that_does_not_load_ends_the_start_naming_the_settings(tmp_path: Path) -> None:
    authority = Authority.issue(tmp_path)
    authority.key_file.write_bytes(trustme.CA().issue_cert("127.0.0.1").private_key_pem.bytes())  # not its key
    with pytest.raises(StartupError) as raised:
        async with running(webhook_settings(authority)):
            pass
    assert raised.value.exit_code == EXIT_CONFIG
    assert "--tls-cert-file" in str(raised.value)


async def _probe(url: str) -> int:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status


async def _ready(metrics: str, process: asyncio.subprocess.Process) -> None:
    async with asyncio.timeout(20):
        while True:
            assert process.returncode is None, "the webhook exited before it was ready"
            try:
                if await _probe(f"{metrics}/readyz") == 200:
                    return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.05)


async def test_the_process_starts_from_its_environment_answers_and_stops_on_sigterm(tmp_path: Path) -> None:
    authority = Authority.issue(tmp_path)
    port, metrics_port = free_port(), free_port()
    env: dict[str, Any] = {
        **{k: v for k, v in os.environ.items() if not k.startswith("GPUDRA_")},
        "GPUDRA_WEBHOOK_PORT": str(port),
        "GPUDRA_METRICS_PORT": str(metrics_port),
        "GPUDRA_TLS_CERT_FILE": str(authority.cert_file),
        "GPUDRA_TLS_KEY_FILE": str(authority.key_file),
        "GPUDRA_NODE_NAME": "node-a",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.admission", cwd=ROOT, env=env, stderr=asyncio.subprocess.PIPE
    )
    try:
        metrics = f"http://127.0.0.1:{metrics_port}"
        await _ready(metrics, process)
        assert await _probe(f"{metrics}/healthz") == 200
        url = f"https://127.0.0.1:{port}/validate"
        answer = await ask(url, authority.client_context(), review(BAD_CLAIM))
        assert answer["allowed"] is False
        async with aiohttp.ClientSession() as session, session.get(f"{metrics}/metrics") as response:
            text = await response.text()
        assert 'gpudra_admission_reviews_total{outcome="refused",resource="resourceclaims"} 1.0' in text
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.stderr is not None
    lines = [json.loads(line) for line in (await process.stderr.read()).decode().splitlines() if line.startswith("{")]
    (refused,) = [line for line in lines if line["msg"].startswith("refused: ")]
    assert refused["object"] == "ResourceClaim default/train-0"
    assert (refused["service"], refused["node"], refused["operation"]) == ("admission", "node-a", "CREATE")
    assert "sharing.mpsConfg" in refused["msg"]
    assert [line["msg"] for line in lines][-1] == "stopping"


def test_one_name_for_both_drivers_is_refused_at_start() -> None:
    with pytest.raises(SettingsError, match=r"--compute-domain-driver-name 'gpu\.gpudra\.io' is also --driver-name"):
        load_settings(Settings, [], {"GPUDRA_COMPUTE_DOMAIN_DRIVER_NAME": "gpu.gpudra.io"})
    assert load_settings(Settings, [], {"GPUDRA_COMPUTE_DOMAIN_DRIVER_NAME": ""}).compute_domain_driver_name == ""
