"""Loading the fault catalogue: the shipped defaults, with an operator's file merged over them.

Every mistake in a file is refused at load, naming the line, because a wrong catalogue either quarantines
healthy GPUs or leaves broken ones in service; a file that loads is safe to act on.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any, TypeVar

from services.health.catalogue.model import (
    AUTOMATIC_ACTIONS,
    NODE_ACTIONS,
    XID_CHECK,
    Catalogue,
    CatalogueDoc,
    CheckEntry,
    CountRule,
    Duration,
    Escalation,
    EscalationDoc,
    FaultSpec,
    XidEntry,
)
from services.health.catalogue.yaml_lines import LineIndex, YamlError, decode_yaml

T = TypeVar("T")

DEFAULTS_FILE = Path(__file__).with_name("defaults.yaml")

_DURATION = re.compile(r"(\d+)\s*([smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_CHECK_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_CODE = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
_BLOCKING_TAINTS = ("NoSchedule", "NoExecute")
MAX_WINDOW_SECONDS = 3650 * 86400
"""Ten years: far beyond any useful window, far within what a ``timedelta`` (and the rules' arithmetic) holds."""


def default_catalogue() -> Catalogue:
    """The shipped catalogue (read once)."""
    return _defaults()


@functools.cache
def _defaults() -> Catalogue:
    return parse_catalogue(DEFAULTS_FILE.read_text(), DEFAULTS_FILE.name)


def load_catalogue(path: str | Path | None = None) -> Catalogue:
    """The defaults, with the operator's file at ``path`` (if any) merged over them."""
    if path is None:
        return default_catalogue()
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise YamlError(f"{path}: cannot read the fault catalogue: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise YamlError(f"{path}: the fault catalogue is not UTF-8 text: {exc}") from None
    return parse_catalogue(text, str(path), default_catalogue())


def parse_catalogue(text: str, source: str, base: Catalogue | None = None) -> Catalogue:
    """Check ``text`` and merge it over ``base``; without a base the file must define everything."""
    doc, index = decode_yaml(text, CatalogueDoc, source, dec_hook=_decode_duration)
    _check(doc, index)
    return _merge(doc, base, source)


def _decode_duration(kind: type, value: Any) -> Any:
    if kind is not Duration:
        raise NotImplementedError(kind)
    if isinstance(value, int) and not isinstance(value, bool):
        seconds = value
    elif isinstance(value, str) and (match := _DURATION.fullmatch(value.strip())):
        seconds = int(match[1]) * _UNIT_SECONDS[match[2]]
    else:
        raise ValueError(f"{value!r} is not a window (write 90s, 3m, 24h, 7d or a number of seconds)")
    if seconds <= 0:
        raise ValueError(f"window {value!r} must be longer than zero")
    if seconds > MAX_WINDOW_SECONDS:
        raise ValueError(f"window {value!r} is longer than {MAX_WINDOW_SECONDS // 86400}d")
    return Duration(seconds=seconds)


def _check(doc: CatalogueDoc, index: LineIndex) -> None:
    if doc.unknown_xid is not None:
        _check_spec(doc.unknown_xid, ("unknown_xid",), index)
    _check_xids(doc.xids, index)
    _check_checks(doc.checks, index)
    _check_escalation(doc.escalation, index)


def _check_spec(spec: FaultSpec, path: tuple[str | int, ...], index: LineIndex) -> None:
    """Combinations that would make the controller do the wrong thing."""
    if spec.action in NODE_ACTIONS and spec.scope != "node":
        raise index.error((*path, "action"), f"{spec.action} restarts the node: it needs scope: node")
    if spec.action == "COMPONENT_RESET" and spec.scope != "device":
        raise index.error((*path, "action"), "COMPONENT_RESET resets one GPU: it needs scope: device")
    if not spec.fatal and spec.taint in _BLOCKING_TAINTS:
        raise index.error((*path, "taint"), "action NONE only records the fault: taint must be None or left out")
    if spec.fatal and spec.scope == "device" and spec.taint not in _BLOCKING_TAINTS:
        raise index.error(
            (*path, "taint"), f"{spec.action} on one device needs taint NoSchedule or NoExecute to keep work off it"
        )


def _check_xids(entries: list[XidEntry], index: LineIndex) -> None:
    first: dict[int, int] = {}
    for i, entry in enumerate(entries):
        _check_spec(entry, ("xids", i), index)
        if not entry.codes:
            raise index.error(("xids", i, "codes"), "codes must list at least one XID")
        for j, code in enumerate(entry.codes):
            where = ("xids", i, "codes", j)
            if code < 0:
                raise index.error(where, f"XID {code} is negative")
            if code in first:
                raise index.error(where, f"XID {code} is listed twice (first at line {first[code]})")
            first[code] = index.line(where)


def _check_checks(entries: list[CheckEntry], index: LineIndex) -> None:
    first: dict[tuple[str, str], int] = {}
    for i, entry in enumerate(entries):
        where = ("checks", i, "check")
        if entry.check == XID_CHECK:
            raise index.error(where, f"check '{XID_CHECK}' is reserved: list XIDs under xids")
        if len(entry.check) > 63 or not _CHECK_NAME.fullmatch(entry.check):
            raise index.error(where, f"check '{entry.check}' must be lowercase letters, digits and '-' (a taint key)")
        for j, code in enumerate(entry.codes):
            if len(code) > 63 or not _CODE.fullmatch(code):
                raise index.error(("checks", i, "codes", j), f"code '{code}' must be a label value (a taint value)")
        for key, path in zip(_check_keys(entry), _code_paths(entry, i), strict=True):
            if key in first:
                raise index.error(path, f"{_describe(key)} is listed twice (first at line {first[key]})")
            first[key] = index.line(path)
        _check_spec(entry, ("checks", i), index)


def _code_paths(entry: CheckEntry, i: int) -> list[tuple[str | int, ...]]:
    return [("checks", i, "codes", j) for j in range(len(entry.codes))] or [("checks", i, "check")]


def _describe(key: tuple[str, str]) -> str:
    check, code = key
    return f"check '{check}' code '{code}'" if code else f"check '{check}' (without codes)"


def _check_escalation(doc: EscalationDoc, index: LineIndex) -> None:
    first: dict[int, int] = {}
    for i, rule in enumerate(doc.repeats or ()):
        _check_rule(rule.count, rule.action, 2, ("escalation", "repeats", i), index)
        for j, xid in enumerate(rule.xids):
            where = ("escalation", "repeats", i, "xids", j)
            if xid in first:
                raise index.error(where, f"XID {xid} is in two repeat rules (first at line {first[xid]})")
            first[xid] = index.line(where)
    for name in ("fatal_repeats", "node_remediations"):
        rule = getattr(doc, name)
        if isinstance(rule, CountRule):
            _check_rule(rule.count, rule.action, 1, ("escalation", name), index)


def _check_rule(count: int, action: str, least: int, path: tuple[str | int, ...], index: LineIndex) -> None:
    if count < least:
        raise index.error((*path, "count"), f"count must be at least {least}, not {count}")
    if action in AUTOMATIC_ACTIONS:
        raise index.error(
            (*path, "action"),
            f"an escalation hands the fault to a person: {action} is automatic (use CONTACT_SUPPORT, "
            "RUN_DCGMEUD, RUN_FIELDDIAG, REPLACE_VM, CUSTOM, or NONE to turn the rule off)",
        )


def _merge(doc: CatalogueDoc, base: Catalogue | None, source: str) -> Catalogue:
    """What ``doc`` names replaces the base: an XID by number, a check by name, an escalation rule by name."""
    base = base or _skeleton(doc, source)
    old, new = base.escalation, doc.escalation
    return Catalogue(
        dedup_window=_either(doc.dedup_window, base.dedup_window),
        unknown_xid=_either(doc.unknown_xid, base.unknown_xid),
        xids=base.xids | {code: entry for entry in doc.xids for code in entry.codes},
        checks=base.checks | {key: entry for entry in doc.checks for key in _check_keys(entry)},
        escalation=Escalation(
            repeats=tuple(new.repeats) if new.repeats is not None else old.repeats,
            spread=_either(new.spread, old.spread),
            fatal_repeats=_either(new.fatal_repeats, old.fatal_repeats),
            node_remediations=_either(new.node_remediations, old.node_remediations),
        ),
    )


def _skeleton(doc: CatalogueDoc, source: str) -> Catalogue:
    """A catalogue with no base (the shipped defaults) must set every section itself."""
    rules = doc.escalation
    return Catalogue(
        dedup_window=_required(doc.dedup_window, "dedup_window", source),
        unknown_xid=_required(doc.unknown_xid, "unknown_xid", source),
        xids={},
        checks={},
        escalation=Escalation(
            repeats=tuple(_required(rules.repeats, "escalation.repeats", source)),
            spread=_required(rules.spread, "escalation.spread", source),
            fatal_repeats=_required(rules.fatal_repeats, "escalation.fatal_repeats", source),
            node_remediations=_required(rules.node_remediations, "escalation.node_remediations", source),
        ),
    )


def _check_keys(entry: CheckEntry) -> list[tuple[str, str]]:
    return [(entry.check, code) for code in entry.codes] or [(entry.check, "")]


def _either(value: T | None, fallback: T) -> T:
    return fallback if value is None else value


def _required(value: T | None, name: str, source: str) -> T:
    if value is None:
        raise YamlError(f"{source}: a catalogue without defaults must set {name}")
    return value
