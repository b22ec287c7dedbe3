"""Event decoding: whatever headers and body arrive, ``decode`` returns the event ``ce-type`` names or raises
``EventError``; and every catalogue event survives ``encode`` then ``decode`` unchanged."""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from libs.events import EVENTS, Event, EventError, decode, encode
from libs.events.envelope import SPECVERSION
from tests.fuzz.strategies import TEXT_MAX, json_values, of_type

CE_HEADERS = ("ce-specversion", "ce-id", "ce-source", "ce-type", "ce-time", "ce-subject")
OUT_OF_RANGE = (b"1e400", b"-1e400", b"18446744073709551616", b"-9223372036854775809", b"1" + b"0" * 5000)

events = st.one_of(*(of_type(cls) for cls in EVENTS.values()))
odd_values = st.one_of(
    st.text(max_size=TEXT_MAX),
    st.integers(1_000, 100_000).map(lambda n: "x" * n),
    st.sampled_from([*EVENTS, "io.gpudra.Nope.v1", "1.0", "0.3", "", "1970-01-01T00:00:00Z", "yesterday"]),
    st.integers(),
    st.none(),
    st.binary(max_size=8),
    st.lists(st.integers(), max_size=2),
)
"""Header values: wrong text, huge text, another event's type, and values that are not text at all."""


@st.composite
def out_of_range(draw: st.DrawFn) -> bytes:
    """A real event's JSON with one field replaced by a number no field can hold."""
    fields = msgspec.to_builtins(draw(events))
    name = draw(st.sampled_from(sorted(fields)))
    marker = "\x00out-of-range\x00"
    return msgspec.json.encode({**fields, name: marker}).replace(
        msgspec.json.encode(marker), draw(st.sampled_from(OUT_OF_RANGE))
    )


bodies = st.one_of(
    st.binary(max_size=64),
    json_values.map(msgspec.json.encode),
    events.map(msgspec.json.encode),
    events.map(lambda event: msgspec.json.encode(event)[:-1] + b"\xff}"),
    out_of_range(),
)
"""Arbitrary bytes, JSON of any shape, valid JSON of (most likely) another event type, non-UTF-8, bad numbers."""


@st.composite
def messages(draw: st.DrawFn) -> tuple[dict[str, Any], bytes]:
    """A real event, then some headers removed, some replaced by odd values, extra ones added, and its body
    kept or swapped for another."""
    headers, body = encode(draw(events), source="/gpudra/node-a/fuzz")
    for name in draw(st.lists(st.sampled_from(CE_HEADERS), max_size=3)):
        if draw(st.booleans()):
            headers.pop(name, None)
        else:
            headers[name] = draw(odd_values)
    extra = draw(st.dictionaries(st.text(max_size=12), odd_values, max_size=2))
    headers = {**extra, **headers} if draw(st.booleans()) else {**headers, **extra}
    return headers, draw(st.just(body) | bodies)


@settings(max_examples=300, deadline=None)
@given(message=messages())
@example(({"ce-specversion": "1.0", "ce-id": "x", "ce-source": "s", "ce-type": [-54, -2340]}, b"[]")).via(
    "found: a ce-type that is a list escaped as TypeError (unhashable) from the catalogue look-up"
)
def test_decoding_gives_the_named_event_or_an_event_error(message: tuple[dict[str, Any], bytes]) -> None:
    headers, body = message
    try:
        envelope = decode(headers, body)
    except EventError:
        return
    assert isinstance(envelope.data, EVENTS[headers["ce-type"]])
    assert all(isinstance(value, str) for value in (envelope.id, envelope.source, envelope.subject))


@pytest.mark.parametrize("cls", EVENTS.values(), ids=lambda cls: cls.__name__)
@settings(max_examples=40, deadline=None)
@given(data=st.data(), time=st.datetimes(timezones=st.just(dt.UTC)), event_id=st.text(min_size=1, max_size=40))
def test_every_event_survives_encode_then_decode(
    cls: type[Event], data: st.DataObject, time: dt.datetime, event_id: str
) -> None:
    event = data.draw(of_type(cls))
    headers, body = encode(event, source="/gpudra/node-a/fuzz", event_id=event_id, time=time)
    envelope = decode(headers, body)
    assert envelope.data == event
    assert (envelope.id, envelope.type, envelope.time, envelope.subject) == (
        event_id,
        cls.ce_type(),
        time,
        event.ce_subject(),
    )
    assert headers["ce-specversion"] == SPECVERSION
