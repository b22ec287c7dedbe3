"""The kubelet shim's door: any list of claims (odd UIDs, names and namespaces, duplicates) gets exactly one
answer per UID, an error string or a forwarded claim whose UID can safely name a file; over the real unix
socket too, where a gRPC error or a mismatched answer would fail the kubelet's whole call."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import msgspec
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from libs.bus import Bus
from libs.events.catalogue import ClaimPrepareResult, ClaimRef, PrepareClaims
from libs.events.catalogue.claims import MAX_UID_LENGTH, uid_problem
from libs.kubeletclient import KubeletClient
from libs.natsserver import EmbeddedNats
from services.kubelet_shim.claims import check_claims, merge
from services.kubelet_shim.dra import v1_prepare_response, v1beta1_prepare_response
from services.kubelet_shim.service import serve
from tests.fuzz.strategies import odd_names
from tests.kubelet_shim.shim_support import DRIVER, Responder, claim_preparation, shim_settings, short_dir

SAFE_UID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
"""What a UID may hold to name a CDI spec and a checkpoint record: checked here independently of the shim."""

uids = odd_names | st.uuids().map(str) | st.from_regex(SAFE_UID, fullmatch=True) | st.text(max_size=20)
names = odd_names | st.text(max_size=20) | st.just("default")


@st.composite
def claim_lists(draw: st.DrawFn) -> list[ClaimRef]:
    """Claims, some listed again as they were and some with their UID under another name."""
    claims = draw(st.lists(st.builds(ClaimRef, namespace=names, name=names, uid=uids), max_size=6))
    again = draw(st.lists(st.sampled_from(claims), max_size=3)) if claims else []
    renamed = [msgspec.structs.replace(claim, name=draw(names)) for claim in again[:1]]
    return draw(st.permutations([*claims, *again, *renamed]))


def safe(uid: str) -> bool:
    return len(uid) <= MAX_UID_LENGTH and ".." not in uid and SAFE_UID.fullmatch(uid) is not None


@settings(max_examples=300, deadline=None)
@given(claims=claim_lists(), limit=st.integers(0, 8))
@example([ClaimRef(namespace="default", name="c", uid="abc\n")], 8).via(
    "found: uid_problem matched with ^...$, which passes a trailing newline: 'abc\\n' was forwarded"
)
def test_every_claim_gets_an_error_or_is_forwarded_with_a_safe_uid(claims: list[ClaimRef], limit: int) -> None:
    checked = check_claims(claims, limit)
    prepared = {claim.uid: ClaimPrepareResult() for claim in checked.forward}
    answer = merge(
        checked, prepared, failure=None, node="node-a", make_error=lambda error: ClaimPrepareResult(error=error)
    )
    assert list(answer) == list(dict.fromkeys(claim.uid for claim in claims))
    assert all(safe(claim.uid) and not answer[claim.uid].error for claim in checked.forward)
    assert all(answer[uid].error == error != "" for uid, error in checked.rejected.items())
    command = PrepareClaims(claims=checked.forward)
    assert msgspec.json.decode(msgspec.json.encode(command), type=PrepareClaims) == command
    assert set(v1_prepare_response(answer).claims) == set(v1beta1_prepare_response(answer).claims) == set(answer)


@pytest.fixture
async def kubelet(bus: Bus, nats_server: EmbeddedNats) -> AsyncIterator[tuple[KubeletClient, Responder]]:
    """A shim on real unix sockets, claim_preparation played by ``Responder``, and a registered kubelet client."""
    with short_dir() as kubelet_dir:
        async with (
            claim_preparation(nats_server.url, Responder()) as responder,
            serve(bus, shim_settings(nats_server.url, kubelet_dir)) as shim,
        ):
            client = await KubeletClient.register(shim.registration_socket.path, driver_name=DRIVER)
            async with client:
                yield client, responder


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(claims=claim_lists())
async def test_a_real_shim_answers_every_uid_of_odd_calls(
    kubelet: tuple[KubeletClient, Responder], claims: list[ClaimRef]
) -> None:
    """The client raises on a gRPC error or an answer that is not exactly the UIDs asked about."""
    client, responder = kubelet
    asked = [(claim.namespace, claim.name, claim.uid) for claim in claims]
    prepared = await client.prepare(asked)
    unprepared = await client.unprepare(asked)
    checked = check_claims(claims, limit=len(claims))
    for uid in prepared:
        assert prepared[uid].ok == unprepared[uid].ok == (uid not in checked.rejected), prepared[uid].error
        assert prepared[uid].ok or uid_problem(uid) or "different claims" in prepared[uid].error
    assert all(safe(claim.uid) for call in responder.calls for claim in call.claims)
