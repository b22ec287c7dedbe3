"""Commands: any request body decodes to the command or fails with msgspec's decode error (what
``Endpoint.answer`` turns into a 400), and a real ``nats.micro`` endpoint answers garbage with 400 and keeps
answering valid requests."""

from __future__ import annotations

from typing import TypeVar

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from libs.bus import Bus, Endpoint
from libs.bus.rpc import ERROR_CODE_HEADER
from libs.events import COMMANDS, Command
from libs.events.catalogue import ClaimPrepareResult, ClaimRef, PrepareClaims, PrepareClaimsReply
from libs.events.subjects import rpc_subject
from tests.fuzz.strategies import json_values, of_type

C = TypeVar("C", bound=Command)

commands = st.one_of(*(of_type(cls) for cls in COMMANDS))
bodies = st.one_of(
    st.binary(max_size=64),
    json_values.map(msgspec.json.encode),
    commands.map(msgspec.json.encode),
    commands.map(lambda command: msgspec.json.encode(command)[:-1] + b',"claims":7}'),
    commands.map(lambda command: msgspec.json.encode(command)[: len(msgspec.json.encode(command)) // 2]),
)
"""Bytes, JSON of any shape, another command's JSON, a command with a field of the wrong type, a cut one."""

trace_headers = st.dictionaries(
    st.sampled_from(["traceparent", "tracestate", "baggage"]),
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=60),
    max_size=2,
)
"""Trace context is read from every request: garbage there must not matter (values stay one line of ASCII,
which is all a NATS header can carry)."""


def decoded(body: bytes, cls: type[C]) -> C | None:
    """The command in ``body``, or None when it is not one; anything else escaping is the failure sought."""
    try:
        return msgspec.json.decode(body, type=cls)
    except msgspec.DecodeError:  # ValidationError is a DecodeError
        return None


@pytest.mark.parametrize("cls", COMMANDS, ids=lambda cls: cls.__name__)
@settings(max_examples=100, deadline=None)
@given(body=bodies)
def test_any_body_decodes_to_the_command_or_a_decode_error(cls: type[Command], body: bytes) -> None:
    command = decoded(body, cls)
    assert command is None or isinstance(command, cls)


async def answer(command: PrepareClaims) -> PrepareClaimsReply:
    return PrepareClaimsReply(results={claim.uid: ClaimPrepareResult() for claim in command.claims})


@pytest.fixture
async def endpoint(bus: Bus) -> Bus:
    """The bus, serving ``PrepareClaims`` on node-a (the richest command: a list of structs)."""
    await bus.serve("0.0.0-fuzz", [Endpoint(PrepareClaims, answer)])
    return bus


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(requests=st.lists(st.tuples(bodies, trace_headers), min_size=1, max_size=4))
async def test_a_real_endpoint_answers_garbage_with_400_and_keeps_answering(
    endpoint: Bus, requests: list[tuple[bytes, dict[str, str]]]
) -> None:
    """One server for all examples (the fixture is the test's): each example is a batch, then a valid request."""
    subject = rpc_subject("node-a", PrepareClaims.service, PrepareClaims.endpoint)
    for body, headers in requests:
        reply = await endpoint.nc.request(subject, body, timeout=5, headers=headers or None)
        command = decoded(body, PrepareClaims)
        code = (reply.headers or {}).get(ERROR_CODE_HEADER)
        if command is None:
            assert code == "400", (body, reply.headers)
        else:
            assert code is None
            assert msgspec.json.decode(reply.data, type=PrepareClaimsReply) == await answer(command)
    valid = PrepareClaims(claims=[ClaimRef(namespace="default", name="c", uid="u-1")])
    answered = await endpoint.request("node-a", valid, PrepareClaimsReply, timeout=5)
    assert list(answered.results) == ["u-1"]
