"""The fault catalogue's types: the YAML document as written (``CatalogueDoc``) and the merged, checked
table the rules read (``Catalogue``).

A document names only what it sets, so one shape serves both the shipped defaults and an operator's
override; ``Catalogue`` is the result of merging the override over the defaults, with nothing left optional.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

import msgspec

from libs.events.catalogue.health import RecommendedAction, TaintEffect

Scope = Literal["device", "node"]
"""What a fault takes out of service: one device (taint it, drain its pods, reset it) or the node (cordon,
drain everything, reboot)."""

XID_CHECK = "xid"
"""The check name node monitors use for XID events; the XID number travels in ``error_codes``."""

AUTOMATIC_ACTIONS: frozenset[RecommendedAction] = frozenset({"COMPONENT_RESET", "RESTART_VM", "RESTART_BM"})
"""Actions the controller carries out itself; every other non-NONE action waits for a person."""

NODE_ACTIONS: frozenset[RecommendedAction] = frozenset({"RESTART_VM", "RESTART_BM"})


class Duration(dt.timedelta):
    """A window written as ``90s``, ``3m``, ``24h``, ``7d`` or a number of seconds (see the loader)."""


class FaultSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What to do about one kind of fault."""

    action: RecommendedAction
    taint: TaintEffect | None = None
    """The device taint effect; left out (null) for no taint. ``None`` is the KEP-5055 effect that only records."""
    scope: Scope = "device"
    description: str = ""

    @property
    def fatal(self) -> bool:
        """NVSentinel's rule: a fault is fatal when its action is not NONE."""
        return self.action != "NONE"


class XidEntry(FaultSpec, frozen=True, kw_only=True, forbid_unknown_fields=True):
    codes: list[int]


class CheckEntry(FaultSpec, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A check's faults by code (the event's first error code); without ``codes``, every code the check's
    other entries do not name."""

    check: str
    codes: list[str] = msgspec.field(default_factory=list)


class RepeatRule(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The same XID ``count`` times on one GPU within ``window`` → ``action`` (XID 13/31 → RUN_DCGMEUD)."""

    xids: list[int]
    count: int
    window: Duration
    action: RecommendedAction
    taint: TaintEffect = "NoSchedule"


class SpreadRule(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The same XID on another GPU of the node within ``window``: likely the application, so a repeat of an
    informational XID is not escalated. It never downgrades a fatal fault."""

    window: Duration


class CountRule(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``count`` or more within ``window`` → ``action``."""

    count: int
    window: Duration
    action: RecommendedAction


class EscalationDoc(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    repeats: list[RepeatRule] | None = None
    spread: SpreadRule | None = None
    fatal_repeats: CountRule | None = None
    node_remediations: CountRule | None = None


class CatalogueDoc(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One catalogue file: the shipped defaults or an operator's override (same shape, all optional)."""

    version: Literal[1] = 1
    dedup_window: Duration | None = None
    unknown_xid: FaultSpec | None = None
    xids: list[XidEntry] = msgspec.field(default_factory=list)
    checks: list[CheckEntry] = msgspec.field(default_factory=list)
    escalation: EscalationDoc = msgspec.field(default_factory=EscalationDoc)


class Escalation(msgspec.Struct, frozen=True, kw_only=True):
    repeats: tuple[RepeatRule, ...]
    spread: SpreadRule
    fatal_repeats: CountRule
    """A fatal XID (any) this many times on one GPU → CONTACT_SUPPORT."""
    node_remediations: CountRule
    """This many remediations on one node → CONTACT_SUPPORT, which only a person clears."""


class Catalogue(msgspec.Struct, frozen=True, kw_only=True):
    """The merged table the rules read; build it with the loader, which checks it."""

    dedup_window: dt.timedelta
    unknown_xid: FaultSpec
    xids: dict[int, FaultSpec]
    checks: dict[tuple[str, str], FaultSpec]
    """By (check, code); code ``""`` is the entry for the check's other codes."""
    escalation: Escalation
