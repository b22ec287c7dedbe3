"""Hypothesis strategies the fuzz tests share: valid values of msgspec types, JSON documents, odd text.

``st.from_type`` cannot build msgspec Structs: it reads ``__init__`` and passes a field's default factory in as
its value. So valid values are built here from msgspec's own type info (``msgspec.inspect``), which also
carries the ``Meta`` constraints (``ge``, ``le``, ``max_length``) and the ``Literal`` choices.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec
from hypothesis import strategies as st

COLLECTION_MAX = 3
TEXT_MAX = 24

finite_floats = st.floats(allow_nan=False, allow_infinity=False)
"""JSON has no NaN or infinity: msgspec writes them as ``null``, which no float field decodes. The catalogue's
floats are durations and timings, finite by construction, so the round trips use finite ones."""

offsets = st.integers(-(23 * 60 + 59), 23 * 60 + 59).map(lambda minutes: dt.timezone(dt.timedelta(minutes=minutes)))
"""RFC 3339 offsets are whole minutes; a zone with a seconds offset (historic local mean time) has no form."""

json_scalars = st.none() | st.booleans() | st.integers() | finite_floats | st.text(max_size=TEXT_MAX)
json_values: st.SearchStrategy[Any] = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
"""Any JSON document, of any shape."""

yaml_scalars = json_scalars | st.dates() | st.datetimes() | st.binary(max_size=4)
yaml_keys = st.text(max_size=8) | st.integers() | st.none() | st.booleans() | st.dates() | finite_floats
yaml_values: st.SearchStrategy[Any] = st.recursive(
    yaml_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(yaml_keys, inner, max_size=4),
    max_leaves=10,
)
"""What ``yaml.safe_load`` can give besides JSON: dates, bytes, keys that are not text (null, numbers, dates)."""

argv_text = st.text(max_size=TEXT_MAX) | st.binary(max_size=TEXT_MAX).map(
    lambda b: b.decode("utf-8", "surrogateescape")
)
"""Command-line words as Python hands them over on Linux: bytes that are not UTF-8 become lone surrogates."""

odd_names = st.sampled_from(["", ".", "..", "../x", "a/b", "x" * 300, "ok\n", "ok ", "É", "\x00", "a..b", "*", ">"])
"""Names that break naive checks: empty, path-like, too long, a trailing newline (``$`` matches before it)."""


def mostly(valid: st.SearchStrategy[Any], odd: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``valid`` nine times in ten: a document odd everywhere is refused at its first field, so the checks behind
    that field would never run; odd in one place at a time, each check gets its turn."""
    return st.integers(0, 9).flatmap(lambda roll: odd if roll == 0 else valid)


def of_type(tp: Any) -> st.SearchStrategy[Any]:
    """Valid values of ``tp`` (a Struct, or any type msgspec understands that the catalogue uses)."""
    return _strategy(msgspec.inspect.type_info(tp))


def _strategy(info: msgspec.inspect.Type) -> st.SearchStrategy[Any]:
    match info:
        case msgspec.inspect.StructType():
            return _struct(info)
        case msgspec.inspect.UnionType(types=types):
            return st.one_of(*(_strategy(member) for member in types))
        case msgspec.inspect.ListType(item_type=item) | msgspec.inspect.VarTupleType(item_type=item):
            collection = st.lists(_strategy(item), max_size=COLLECTION_MAX)
            return collection.map(tuple) if isinstance(info, msgspec.inspect.VarTupleType) else collection
        case msgspec.inspect.DictType(key_type=key, value_type=value):
            return st.dictionaries(_strategy(key), _strategy(value), max_size=COLLECTION_MAX)
        case msgspec.inspect.LiteralType(values=values):
            return st.sampled_from(values)
        case msgspec.inspect.EnumType(cls=cls):
            return st.sampled_from(list(cls))
        case msgspec.inspect.IntType():
            return _integers(info)
        case msgspec.inspect.StrType(min_length=least, max_length=most):
            return st.text(min_size=least or 0, max_size=min(most or TEXT_MAX, TEXT_MAX))
        case msgspec.inspect.FloatType():
            return finite_floats
        case msgspec.inspect.BoolType():
            return st.booleans()
        case msgspec.inspect.NoneType():
            return st.none()
        case msgspec.inspect.DateTimeType():
            return st.datetimes(timezones=st.none() | st.just(dt.UTC) | offsets)
    raise NotImplementedError(f"no strategy for {info}: add one when a boundary type needs it")


def _integers(info: msgspec.inspect.IntType) -> st.SearchStrategy[int]:
    least = info.ge if info.ge is not None else (info.gt + 1 if info.gt is not None else None)
    most = info.le if info.le is not None else (info.lt - 1 if info.lt is not None else None)
    return st.integers(min_value=least, max_value=most)


def _struct(info: msgspec.inspect.StructType) -> st.SearchStrategy[Any]:
    """Required fields always, optional ones sometimes: a left-out field takes its default."""
    required = {field.name: _strategy(field.type) for field in info.fields if field.required}
    optional = {field.name: _strategy(field.type) for field in info.fields if not field.required}
    return st.fixed_dictionaries(required, optional=optional).map(lambda fields: info.cls(**fields))
