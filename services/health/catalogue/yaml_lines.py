"""YAML into typed msgspec structs, with errors that name the file and line.

msgspec checks types but reports a path (``$.xids[2].action``) and PyYAML knows lines but not types, so the
document is composed with PyYAML's node marks, turned into plain data while every path's line is noted, and
then converted by msgspec; any error is mapped back to the line an operator should edit.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, TypeVar

import msgspec
import yaml

T = TypeVar("T")
Path = tuple[str | int, ...]

_PATH_PART = re.compile(r"\.([A-Za-z_]\w*)|\[(\d+)\]")
_MSGSPEC_ERROR = re.compile(r"^(?P<what>.*?)(?: - at `(?P<path>\$[^`]*)`)?$", re.DOTALL)


class YamlError(ValueError):
    """A file a person wrote is wrong; the message says where (``faults.yaml line 12: ...``)."""


class LineIndex:
    """The line of every value (and of every mapping key) in one document, by path."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.values: dict[Path, int] = {}
        self.keys: dict[Path, int] = {}

    def line(self, path: Path, *, key: bool = False) -> int:
        """The line of ``path``, or of its nearest ancestor written in the file (a default is not)."""
        lines = self.keys if key else self.values
        while path not in lines and path:
            path = path[:-1]
        return lines.get(path, 1)

    def error(self, path: Path, message: str, *, key: bool = False) -> YamlError:
        return YamlError(f"{self.source} line {self.line(path, key=key)}: {message}")


def decode_yaml(
    text: str, into: type[T], source: str, dec_hook: Callable[[type, Any], Any] | None = None
) -> tuple[T, LineIndex]:
    """Parse ``text`` as one ``into``; an empty document is an empty mapping (a file that changes nothing)."""
    index = LineIndex(source)
    try:
        data = _plain(_compose(text, source), (), index, yaml.SafeLoader(""))
    except RecursionError:  # PyYAML composes recursively, as does _plain: hundreds of nested lists exhaust the stack
        raise YamlError(f"{source}: lists or mappings are nested too deeply") from None
    try:
        return msgspec.convert({} if data is None else data, into, dec_hook=dec_hook), index
    except msgspec.ValidationError as exc:
        raise _explain(exc, into, index) from None


def _compose(text: str, source: str) -> yaml.Node | None:
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else 1
        raise YamlError(f"{source} line {line}: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise YamlError(f"{source}: {exc}") from None


def _plain(
    node: yaml.Node | None, path: Path, index: LineIndex, loader: yaml.SafeLoader, above: frozenset[int] = frozenset()
) -> Any:
    """``above``: the collections this one is inside; an alias to one of them would nest without end."""
    if node is None:
        return None
    line = node.start_mark.line + 1
    index.values[path] = line
    if id(node) in above:
        raise YamlError(f"{index.source} line {line}: an alias refers to a list or mapping that contains it")
    if isinstance(node, yaml.MappingNode):
        return _mapping(node, path, index, loader, above | {id(node)})
    if isinstance(node, yaml.SequenceNode):
        return [_plain(item, (*path, i), index, loader, above | {id(node)}) for i, item in enumerate(node.value)]
    return _scalar(node, index, loader)


def _scalar(node: yaml.Node, index: LineIndex, loader: yaml.SafeLoader) -> Any:
    """A tag PyYAML's safe loader does not know (``!foo``) or a value its tag refuses (``!!binary x``)."""
    try:
        return loader.construct_object(node)
    except yaml.MarkedYAMLError as exc:
        raise YamlError(f"{index.source} line {node.start_mark.line + 1}: {exc.problem or exc.context}") from None


def _mapping(
    node: yaml.MappingNode, path: Path, index: LineIndex, loader: yaml.SafeLoader, above: frozenset[int]
) -> dict[Any, Any]:
    result: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        line = key_node.start_mark.line + 1
        if not isinstance(key_node, yaml.ScalarNode):
            raise YamlError(f"{index.source} line {line}: a key must be a plain value, not a list or mapping")
        key = _scalar(key_node, index, loader)
        where = (*path, str(key))
        if where in index.keys:
            raise YamlError(f"{index.source} line {line}: duplicate key '{key}' (first at line {index.keys[where]})")
        index.keys[where] = line
        result[key] = _plain(value_node, where, index, loader, above)
    return result


def _explain(exc: msgspec.ValidationError, into: type, index: LineIndex) -> YamlError:
    """Turn msgspec's message into one a person can act on, at the line of the offending key or value."""
    match = _MSGSPEC_ERROR.match(str(exc))
    what, path = (match["what"], _parse_path(match["path"] or "$")) if match else (str(exc), ())
    field = next((part for part in reversed(path) if isinstance(part, str)), "the file")
    if unknown := re.fullmatch(r"Object contains unknown field `(.+)`", what):
        name = unknown[1]
        known = ", ".join(_fields(_type_at(into, path)))
        return index.error((*path, name), f"unknown key '{name}' (expected one of: {known})", key=True)
    if missing := re.fullmatch(r"Object missing required field `(.+)`", what):
        return index.error(path, f"missing key '{missing[1]}'")
    if bad := re.fullmatch(r"Invalid enum value (.+)", what):
        allowed = ", ".join(str(v) for v in _literals(_type_at(into, path)))
        return index.error(path, f"unknown {field} {bad[1]} (one of: {allowed})")
    return index.error(path, f"{field}: {what[0].lower()}{what[1:]}")


def _parse_path(text: str) -> Path:
    return tuple(name if name else int(number) for name, number in _PATH_PART.findall(text))


def _type_at(root: type, path: Path) -> msgspec.inspect.Type | None:
    """The msgspec type found at ``path`` inside ``root``, through structs, lists and optionals."""
    current: msgspec.inspect.Type | None = msgspec.inspect.type_info(root)
    for part in path:
        current = _without_none(current)
        if isinstance(current, msgspec.inspect.StructType):
            current = next((f.type for f in current.fields if f.encode_name == part), None)
        elif isinstance(current, msgspec.inspect.ListType):
            current = current.item_type
    return _without_none(current)


def _without_none(t: msgspec.inspect.Type | None) -> msgspec.inspect.Type | None:
    if isinstance(t, msgspec.inspect.UnionType):
        rest = [u for u in t.types if not isinstance(u, msgspec.inspect.NoneType)]
        if len(rest) == 1:
            return rest[0]
    return t


def _fields(t: msgspec.inspect.Type | None) -> list[str]:
    return [f.encode_name for f in t.fields] if isinstance(t, msgspec.inspect.StructType) else []


def _literals(t: msgspec.inspect.Type | None) -> list[object]:
    if isinstance(t, msgspec.inspect.LiteralType):
        return list(t.values)
    if isinstance(t, msgspec.inspect.UnionType):
        return [v for u in t.types for v in _literals(u)]
    return []
