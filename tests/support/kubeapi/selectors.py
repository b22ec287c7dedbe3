"""Label and field selectors with the real server's grammar and its "field not supported" rule.

The project narrows lists and watches by ``spec.nodeName`` and ``spec.driver``; a test server
that ignored selectors (or accepted unsupported ones) would hide wrong queries.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from .errors import JsonObj, bad_request

Matcher = Callable[[JsonObj], bool]

_KEY = r"[A-Za-z0-9][-A-Za-z0-9_./]*"
_EXISTS = re.compile(rf"^(!?)\s*({_KEY})$")
_EQUALITY = re.compile(rf"^({_KEY})\s*(==|=|!=)\s*([-A-Za-z0-9_.]*)$")
_SET = re.compile(rf"^({_KEY})\s+(in|notin)\s+\(([^()]*)\)$")


def _split_outside_parens(text: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in text:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [p.strip() for p in parts if p.strip()]


def _label_requirement(text: str) -> Callable[[dict[str, str]], bool]:
    if m := _EQUALITY.match(text):
        key, op, value = m.groups()
        if op == "!=":
            return lambda labels: labels.get(key) != value
        return lambda labels: labels.get(key) == value
    if m := _SET.match(text):
        key, op, raw = m.groups()
        values = {v.strip() for v in raw.split(",")}
        if op == "in":
            return lambda labels: key in labels and labels[key] in values
        return lambda labels: labels.get(key) not in values
    if m := _EXISTS.match(text):
        negate, key = m.groups()
        return (lambda labels: key not in labels) if negate else (lambda labels: key in labels)
    raise bad_request(f"unable to parse requirement: {text!r}")


def label_matcher(selector: str | None) -> Matcher:
    """Compile ``labelSelector`` (equality, set-based and existence requirements)."""
    requirements = [_label_requirement(r) for r in _split_outside_parens(selector or "")]

    def matches(obj: JsonObj) -> bool:
        labels = obj.get("metadata", {}).get("labels") or {}
        return all(req(labels) for req in requirements)

    return matches


def field_value(obj: JsonObj, path: str) -> str:
    """The string a field selector compares against: missing reads as "" and bools as Go prints them."""
    value: Any = obj
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def field_matcher(selector: str | None, supported: tuple[str, ...]) -> Matcher:
    """Compile ``fieldSelector``; fields the resource does not index answer 400 like the real server."""
    allowed = {"metadata.name", "metadata.namespace", *supported}
    requirements: list[tuple[str, bool, str]] = []
    for text in _split_outside_parens(selector or ""):
        m = re.match(r"^([^=!]+?)\s*(==|=|!=)\s*(.*)$", text)
        if not m:
            raise bad_request(f"invalid selector: {text!r}; can't understand {text!r}")
        path, op, value = m.groups()
        if path not in allowed:
            raise bad_request(f"field label not supported: {path}")
        requirements.append((path, op != "!=", value))

    def matches(obj: JsonObj) -> bool:
        return all((field_value(obj, path) == value) == equal for path, equal, value in requirements)

    return matches


def selector_matches(selector: JsonObj | None, labels: dict[str, str]) -> bool:
    """A structured ``LabelSelector`` (matchLabels and matchExpressions, ANDed); empty or absent selects all."""
    selector = selector or {}
    if any(labels.get(key) != value for key, value in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], set(expression.get("values") or [])
        present = key in labels
        held = {
            "In": present and labels.get(key) in values,
            "NotIn": not present or labels.get(key) not in values,
            "Exists": present,
            "DoesNotExist": not present,
        }.get(operator, False)
        if not held:
            return False
    return True
