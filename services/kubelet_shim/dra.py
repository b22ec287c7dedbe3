"""The DRAPlugin service, v1 and v1beta1: each kubelet call becomes one NATS request to claim_preparation.

Both versions carry the same data in different generated classes, so each servicer only converts its
messages to the catalogue's plain structs (``ClaimRef``, ``ClaimPrepareResult``) and back; everything
else (checks, the request, the answer, the trace) is ``KubeletCalls``, shared by both.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc.aio
from opentelemetry import propagate
from opentelemetry.trace import Span, SpanKind

from libs.bus import Bus, tracing
from libs.events.catalogue import (
    ClaimPrepareResult,
    ClaimRef,
    ClaimUnprepareResult,
    PrepareChannels,
    PrepareClaims,
    PreparedDevice,
    UnprepareChannels,
    UnprepareClaims,
)
from libs.telemetry import tracer
from protos.gen import dra_v1_pb2, dra_v1_pb2_grpc, dra_v1beta1_pb2, dra_v1beta1_pb2_grpc
from services.kubelet_shim.claims import (
    CheckedClaims,
    HasError,
    check_claims,
    failed,
    failure_text,
    merge,
    unexpected_uids,
)
from services.kubelet_shim.metrics import KUBELET_CALLS_BY, KUBELET_CLAIMS_BY

log = logging.getLogger(__name__)

R = TypeVar("R", bound=HasError)
Context = grpc.aio.ServicerContext[Any, Any]

PREPARE = "NodePrepareResources"
UNPREPARE = "NodeUnprepareResources"
V1_SERVICE = dra_v1_pb2.DESCRIPTOR.services_by_name["DRAPlugin"].full_name
V1BETA1_SERVICE = dra_v1beta1_pb2.DESCRIPTOR.services_by_name["DRAPlugin"].full_name
# Time kept back from the kubelet's deadline to build and send the answer.
DEADLINE_MARGIN = 1.0
MIN_REQUEST_TIMEOUT = 0.1
_LOGGED_FAILURES = 10


@dataclass(frozen=True)
class Route:
    """Where one driver's calls go: the node service that prepares its claims, and the two commands it serves
    (same fields, ``claims`` in and ``results`` out, for every driver)."""

    service: str
    prepare: type[PrepareClaims] | type[PrepareChannels]
    unprepare: type[UnprepareClaims] | type[UnprepareChannels]


GPU_ROUTE = Route("claim_preparation", PrepareClaims, UnprepareClaims)
CHANNEL_ROUTE = Route("compute_domain", PrepareChannels, UnprepareChannels)


class ClaimForwarder:
    """Checks a call's claims, asks the route's service on this node once, and answers every claim."""

    def __init__(self, bus: Bus, *, node: str, timeout: float, max_claims: int, route: Route = GPU_ROUTE) -> None:
        self._bus = bus
        self.route = route
        self.node = node
        self.timeout = timeout
        self.max_claims = max_claims

    def request_timeout(self, time_remaining: float | None) -> float:
        """The configured timeout, cut so that the answer still reaches a kubelet with a shorter deadline."""
        if time_remaining is None:
            return self.timeout
        return max(MIN_REQUEST_TIMEOUT, min(self.timeout, time_remaining - DEADLINE_MARGIN))

    async def prepare(self, claims: list[ClaimRef], time_remaining: float | None) -> dict[str, ClaimPrepareResult]:
        checked = check_claims(claims, self.max_claims)

        async def ask(timeout: float) -> Mapping[str, ClaimPrepareResult]:
            command = self.route.prepare(claims=checked.forward)
            reply = await self._bus.request(self.node, command, command.reply, timeout=timeout)
            results: Mapping[str, ClaimPrepareResult] = reply.results  # type: ignore[attr-defined]
            return results

        return await self._forward(PREPARE, checked, ask, time_remaining, _prepare_error)

    async def unprepare(self, claims: list[ClaimRef], time_remaining: float | None) -> dict[str, ClaimUnprepareResult]:
        checked = check_claims(claims, self.max_claims)

        async def ask(timeout: float) -> Mapping[str, ClaimUnprepareResult]:
            command = self.route.unprepare(claims=checked.forward)
            reply = await self._bus.request(self.node, command, command.reply, timeout=timeout)
            results: Mapping[str, ClaimUnprepareResult] = reply.results  # type: ignore[attr-defined]
            return results

        return await self._forward(UNPREPARE, checked, ask, time_remaining, _unprepare_error)

    async def _forward(
        self,
        method: str,
        checked: CheckedClaims,
        ask: Callable[[float], Awaitable[Mapping[str, R]]],
        time_remaining: float | None,
        make_error: Callable[[str], R],
    ) -> dict[str, R]:
        results: Mapping[str, R] = {}
        failure: str | None = None
        if checked.forward:
            timeout = self.request_timeout(time_remaining)
            try:
                results = await ask(timeout)
            except Exception as exc:
                failure = failure_text(exc, self.node, timeout, self.route.service)
        extra = unexpected_uids(checked, results)
        if extra:
            log.warning(
                "the node service answered for claims not asked about; dropped them",
                extra={"method": method, "node": self.node, "claims": extra[:_LOGGED_FAILURES]},
            )
        answer = merge(
            checked, results, failure=failure, node=self.node, make_error=make_error, service=self.route.service
        )
        self._report(method, answer)
        return answer

    def _report(self, method: str, answer: Mapping[str, HasError]) -> None:
        errors = failed(answer)
        KUBELET_CLAIMS_BY(method, "failed").inc(len(errors))
        KUBELET_CLAIMS_BY(method, "ok").inc(len(answer) - len(errors))
        for uid, error in list(errors.items())[:_LOGGED_FAILURES]:
            log.warning("claim failed: %s", error, extra={"method": method, "claim": uid, "node": self.node})
        if len(errors) > _LOGGED_FAILURES:
            log.warning(
                "%d more claims failed in the same call",
                len(errors) - _LOGGED_FAILURES,
                extra={"method": method, "node": self.node},
            )


def _prepare_error(message: str) -> ClaimPrepareResult:
    return ClaimPrepareResult(error=message)


def _unprepare_error(message: str) -> ClaimUnprepareResult:
    return ClaimUnprepareResult(error=message)


# -- tracing -------------------------------------------------------------------------------------------


def _metadata(context: Context) -> dict[str, str]:
    return {key: value for key, value in (context.invocation_metadata() or ()) if isinstance(value, str)}


@contextmanager
def server_span(service: str, method: str, context: Context) -> Iterator[Span]:
    """A SERVER span continuing the kubelet's trace (W3C ``traceparent`` in the gRPC metadata).

    The NATS request made inside it injects its own context, so claim_preparation continues the same trace.
    """
    parent = propagate.extract(_metadata(context))
    attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": method}
    with tracer().start_as_current_span(
        f"{service}/{method}", context=parent, kind=SpanKind.SERVER, attributes=attributes
    ) as span:
        yield span


class KubeletCalls:
    """One kubelet call in either API version: span, metrics, and an answer for every claim, always.

    A bug below must not turn into a gRPC error (the kubelet would fail every claim of the call and see no
    reason per claim), so a crash becomes the same per-claim error for all of them.
    """

    def __init__(self, forwarder: ClaimForwarder, *, service: str, version: str) -> None:
        self._forwarder = forwarder
        self._service = service
        self._version = version

    async def prepare(self, claims: list[ClaimRef], context: Context) -> dict[str, ClaimPrepareResult]:
        return await self._call(PREPARE, claims, context, self._forwarder.prepare, _prepare_error)

    async def unprepare(self, claims: list[ClaimRef], context: Context) -> dict[str, ClaimUnprepareResult]:
        return await self._call(UNPREPARE, claims, context, self._forwarder.unprepare, _unprepare_error)

    async def _call(
        self,
        method: str,
        claims: list[ClaimRef],
        context: Context,
        forward: Callable[[list[ClaimRef], float | None], Awaitable[dict[str, R]]],
        make_error: Callable[[str], R],
    ) -> dict[str, R]:
        with server_span(self._service, method, context) as span, KUBELET_CALLS_BY(method, self._version).time():
            span.set_attribute("gpudra.claims.count", len(claims))
            try:
                answer = await forward(claims, context.time_remaining())
            except Exception as exc:
                log.exception("kubelet call crashed", extra={"method": method, "node": self._forwarder.node})
                answer = {claim.uid: make_error(f"claim {claim}: kubelet_shim failed: {exc!r}") for claim in claims}
            errors = failed(answer)
            span.set_attribute("gpudra.claims.failed", len(errors))
            if errors:
                tracing.mark_error(span, f"{len(errors)} of {len(answer)} claims failed: {next(iter(errors.values()))}")
        return answer


# -- v1 ------------------------------------------------------------------------------------------------


def claim_refs(claims: Iterable[dra_v1_pb2.Claim | dra_v1beta1_pb2.Claim]) -> list[ClaimRef]:
    """Both versions' ``Claim`` as the catalogue's ``ClaimRef`` (same three fields)."""
    return [ClaimRef(namespace=c.namespace, name=c.name, uid=c.uid) for c in claims]


def _v1_device(device: PreparedDevice) -> dra_v1_pb2.Device:
    converted = dra_v1_pb2.Device(
        request_names=device.request_names,
        pool_name=device.pool,
        device_name=device.device,
        cdi_device_ids=device.cdi_device_ids,
    )
    if device.share_id is not None:
        converted.share_id = device.share_id
    return converted


def v1_prepare_response(answer: Mapping[str, ClaimPrepareResult]) -> dra_v1_pb2.NodePrepareResourcesResponse:
    return dra_v1_pb2.NodePrepareResourcesResponse(
        claims={
            uid: dra_v1_pb2.NodePrepareResourceResponse(
                devices=[] if result.error else [_v1_device(d) for d in result.devices], error=result.error
            )
            for uid, result in answer.items()
        }
    )


class DraV1(dra_v1_pb2_grpc.DRAPluginServicer):
    """``v1.DRAPlugin`` (kubelet 1.34+), listed first so that the kubelet picks it."""

    def __init__(self, forwarder: ClaimForwarder) -> None:
        self._calls = KubeletCalls(forwarder, service=V1_SERVICE, version="v1")

    async def NodePrepareResources(
        self, request: dra_v1_pb2.NodePrepareResourcesRequest, context: Context
    ) -> dra_v1_pb2.NodePrepareResourcesResponse:
        return v1_prepare_response(await self._calls.prepare(claim_refs(request.claims), context))

    async def NodeUnprepareResources(
        self, request: dra_v1_pb2.NodeUnprepareResourcesRequest, context: Context
    ) -> dra_v1_pb2.NodeUnprepareResourcesResponse:
        answer = await self._calls.unprepare(claim_refs(request.claims), context)
        return dra_v1_pb2.NodeUnprepareResourcesResponse(
            claims={uid: dra_v1_pb2.NodeUnprepareResourceResponse(error=r.error) for uid, r in answer.items()}
        )


# -- v1beta1 -------------------------------------------------------------------------------------------


def _v1beta1_device(device: PreparedDevice) -> dra_v1beta1_pb2.Device:
    """v1beta1 has no ``share_id`` (field 5 came with v1 in 1.35): it is left out."""
    return dra_v1beta1_pb2.Device(
        request_names=device.request_names,
        pool_name=device.pool,
        device_name=device.device,
        cdi_device_ids=device.cdi_device_ids,
    )


def v1beta1_prepare_response(
    answer: Mapping[str, ClaimPrepareResult],
) -> dra_v1beta1_pb2.NodePrepareResourcesResponse:
    return dra_v1beta1_pb2.NodePrepareResourcesResponse(
        claims={
            uid: dra_v1beta1_pb2.NodePrepareResourceResponse(
                devices=[] if result.error else [_v1beta1_device(d) for d in result.devices], error=result.error
            )
            for uid, result in answer.items()
        }
    )


class DraV1beta1(dra_v1beta1_pb2_grpc.DRAPluginServicer):
    """``v1beta1.DRAPlugin``: deprecated, still what a kubelet without v1 asks for."""

    def __init__(self, forwarder: ClaimForwarder) -> None:
        self._calls = KubeletCalls(forwarder, service=V1BETA1_SERVICE, version="v1beta1")

    async def NodePrepareResources(
        self, request: dra_v1beta1_pb2.NodePrepareResourcesRequest, context: Context
    ) -> dra_v1beta1_pb2.NodePrepareResourcesResponse:
        return v1beta1_prepare_response(await self._calls.prepare(claim_refs(request.claims), context))

    async def NodeUnprepareResources(
        self, request: dra_v1beta1_pb2.NodeUnprepareResourcesRequest, context: Context
    ) -> dra_v1beta1_pb2.NodeUnprepareResourcesResponse:
        answer = await self._calls.unprepare(claim_refs(request.claims), context)
        return dra_v1beta1_pb2.NodeUnprepareResourcesResponse(
            claims={uid: dra_v1beta1_pb2.NodeUnprepareResourceResponse(error=r.error) for uid, r in answer.items()}
        )
