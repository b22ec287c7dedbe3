"""The kubelet's path end to end: kubelet-like gRPC client -> kubelet_shim (real unix sockets) -> NATS ->
claim_preparation -> CDI spec and events, for both DRA API versions, in one trace."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from libs.bus import Bus
from libs.kube import KubeApi
from libs.kubeletclient import DRA_V1, DRA_V1BETA1, KubeletClient
from libs.telemetry import tracer
from services.claim_preparation.service import ClaimService
from services.claim_preparation.settings import Settings
from services.kubelet_shim.service import Shim, serve
from tests.claim_preparation.claim_prep_support import DRIVER, STATIC_MIG, EventLog, cdi_files, store_claim
from tests.kubelet_shim.shim_support import shim_settings, short_dir


@pytest.fixture
def kubelet_dir() -> Iterator[Path]:
    with short_dir("cp-") as path:
        yield path


@pytest.fixture
async def shim(bus: Bus, settings: Settings, kubelet_dir: Path, service: ClaimService) -> AsyncIterator[Shim]:
    async with serve(bus, shim_settings(settings.nats_url, kubelet_dir)) as running:
        yield running


@pytest.mark.parametrize("version", [DRA_V1, DRA_V1BETA1])
async def test_kubelet_prepares_and_unprepares_through_the_shim(
    version: str, *, shim: Shim, kube: KubeApi, settings: Settings, events: EventLog
) -> None:
    ref = await store_claim(kube, "e2e-0", [("gpu", "gpu-4"), ("mig", STATIC_MIG)])
    bad = await store_claim(kube, "e2e-bad", [("gpu", "gpu-77")])
    client = await KubeletClient.register(shim.registration_socket.path, driver_name=DRIVER, force_version=version)
    async with client:
        results = await client.prepare([(ref.namespace, ref.name, ref.uid), (bad.namespace, bad.name, bad.uid)])
        assert results[ref.uid].error == ""
        assert [(d.request_names, d.device_name) for d in results[ref.uid].devices] == [
            (("gpu",), "gpu-4"),
            (("mig",), STATIC_MIG),
        ]
        assert results[ref.uid].devices[0].cdi_device_ids == (f"k8s.{DRIVER}/claim={ref.uid}-gpu-4",)
        assert "device gpu-77 does not exist" in results[bad.uid].error
        spec = json.loads(cdi_files(settings)[0].read_text())
        assert {d["name"] for d in spec["devices"]} == {f"{ref.uid}-gpu-4", f"{ref.uid}-{STATIC_MIG}"}
        await events.next("ClaimPrepared")
        unprepared = await client.unprepare([(ref.namespace, ref.name, ref.uid), (bad.namespace, bad.name, bad.uid)])
        assert {uid: r.error for uid, r in unprepared.items()} == {ref.uid: "", bad.uid: ""}
    assert cdi_files(settings) == []


async def test_one_trace_from_the_kubelet_call_to_the_event(
    shim: Shim, service: ClaimService, kube: KubeApi, spans: InMemorySpanExporter
) -> None:
    ref = await store_claim(kube, "traced-0", [("gpu", "gpu-5")])
    client = await KubeletClient.register(shim.registration_socket.path, driver_name=DRIVER)
    async with client:
        with tracer().start_as_current_span("kubelet NodePrepareResources") as kubelet:
            assert (await client.prepare([(ref.namespace, ref.name, ref.uid)]))[ref.uid].error == ""
    await service.preparer.parts.outbox.flush()  # the event's send span ends with JetStream's ack, after the answer
    trace_id = kubelet.get_span_context().trace_id
    finished = spans.get_finished_spans()
    names = {span.name for span in finished if span.context is not None and span.context.trace_id == trace_id}
    assert "prepare claim" in names
    assert "process gpudra.v1.node-a.rpc.claims.prepare" in names  # claim_preparation serving the request
    assert "send gpudra.v1.node-a.claims.prepared" in names  # and publishing ClaimPrepared
