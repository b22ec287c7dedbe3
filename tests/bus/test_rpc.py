"""Commands over nats.micro: typed round trip, coded errors, discovery through $SRV.INFO."""

from __future__ import annotations

import pytest

from libs.bus import Bus, CommandError, Endpoint, ServiceUnavailable
from libs.bus.directory import list_services
from libs.events.catalogue import (
    ClaimPrepareResult,
    ClaimRef,
    PrepareClaims,
    PrepareClaimsReply,
    PreparedDevice,
)

CLAIM = ClaimRef(namespace="default", name="train", uid="uid-1")


async def answer(command: PrepareClaims) -> PrepareClaimsReply:
    if any(claim.uid == "explode" for claim in command.claims):
        raise CommandError(409, "claim default/explode: device gpu-3 is already prepared for claim default/other")
    device = PreparedDevice(
        request_names=["gpu"], pool="node-a", device="gpu-0", cdi_device_ids=["k8s.gpudra.io/claim=x"]
    )
    return PrepareClaimsReply(results={claim.uid: ClaimPrepareResult(devices=[device]) for claim in command.claims})


async def test_request_reply_round_trip(bus: Bus) -> None:
    await bus.serve("1.0.0", [Endpoint(PrepareClaims, answer)])
    reply = await bus.request("node-a", PrepareClaims(claims=[CLAIM]), PrepareClaimsReply, timeout=5)
    assert reply.results["uid-1"].devices[0].device == "gpu-0"


async def test_service_and_endpoint_appear_in_srv_info(bus: Bus) -> None:
    await bus.serve("1.0.0", [Endpoint(PrepareClaims, answer)], metadata={"metrics": "http://x/metrics"})
    [info] = await list_services(bus.nc, "test")
    assert (info.name, info.version, info.node) == ("test", "1.0.0", "node-a")
    assert info.metadata["metrics"] == "http://x/metrics"
    [endpoint] = info.endpoints
    assert endpoint["name"] == "claims-prepare"
    assert endpoint["subject"] == "gpudra.v1.node-a.rpc.claims.prepare"


async def test_service_without_endpoints_is_still_listed(bus: Bus) -> None:
    await bus.serve("1.0.0")
    assert [info.name for info in await list_services(bus.nc)] == ["test"]


async def test_handler_error_reaches_caller_with_code_and_message(bus: Bus) -> None:
    await bus.serve("1.0.0", [Endpoint(PrepareClaims, answer)])
    bad = PrepareClaims(claims=[ClaimRef(namespace="default", name="explode", uid="explode")])
    with pytest.raises(CommandError) as failure:
        await bus.request("node-a", bad, PrepareClaimsReply, timeout=5)
    assert failure.value.code == 409
    assert "device gpu-3 is already prepared" in failure.value.message


async def test_malformed_request_gets_400_naming_the_field(bus: Bus) -> None:
    await bus.serve("1.0.0", [Endpoint(PrepareClaims, answer)])
    msg = await bus.nc.request("gpudra.v1.node-a.rpc.claims.prepare", b'{"claims": [{"uid": 1}]}', timeout=5)
    headers = msg.headers or {}
    assert headers["Nats-Service-Error-Code"] == "400"
    assert "bad PrepareClaims" in headers["Nats-Service-Error"]
    assert "Expected `str`, got `int`" in headers["Nats-Service-Error"]


async def test_no_service_on_the_node_is_a_clear_error(bus: Bus) -> None:
    with pytest.raises(ServiceUnavailable, match="no claims service answers prepare on node node-b"):
        await bus.request("node-b", PrepareClaims(claims=[CLAIM]), PrepareClaimsReply, timeout=2)


async def test_concurrent_endpoint_overlaps_requests(bus: Bus) -> None:
    import asyncio

    inside = 0
    peak = 0
    release = asyncio.Event()

    async def slow(command: PrepareClaims) -> PrepareClaimsReply:
        nonlocal inside, peak
        inside += 1
        peak = max(peak, inside)
        if peak >= 4:
            release.set()
        await release.wait()
        inside -= 1
        return PrepareClaimsReply(results={})

    await bus.serve("1.0.0", [Endpoint(PrepareClaims, slow, concurrency=4)])
    await asyncio.gather(
        *(bus.request("node-a", PrepareClaims(claims=[CLAIM]), PrepareClaimsReply, timeout=5) for _ in range(4))
    )
    assert peak == 4
