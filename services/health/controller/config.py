"""What the controller runs with, read once at start from the service's settings and files.

The rules get their own config structs (``RemediationConfig``, ``BreakerConfig``, the catalogue, the drain
policy); the wiring's knobs (timeouts, pacing, identity) are ``ControllerConfig``. A file that cannot be used
stops the start with a ``ConfigError`` naming the file, the line and the setting, never a guess.
"""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path
from typing import Any, Literal

import msgspec

from libs.bus.election import default_replica
from services.health.catalogue import Catalogue, YamlError, decode_yaml, default_catalogue, load_catalogue
from services.health.remediation import BreakerConfig, DrainPolicy, DrainRule, RemediationConfig
from services.health.settings import Settings


class ConfigError(ValueError):
    """A controller setting or file that cannot be used; the message names it."""


class Timing(msgspec.Struct, frozen=True, kw_only=True):
    """How long the executor waits for things. No defaults here: they are the settings' (``from_settings``),
    declared once in ``services.health.settings``."""

    verify: float
    reset: float
    reboot: float
    drain_pass: float
    drain_timeout: float
    lease_renew: float
    sweep: float


class ControllerConfig(msgspec.Struct, frozen=True, kw_only=True):
    rules: RemediationConfig = msgspec.field(default_factory=RemediationConfig)
    breaker: BreakerConfig = msgspec.field(default_factory=BreakerConfig)
    catalogue: Catalogue = msgspec.field(default_factory=default_catalogue)
    drain: DrainPolicy = msgspec.field(default_factory=DrainPolicy)
    timing: Timing
    replica: str = ""
    """This replica's identity; work it starts is recorded as its own."""
    incarnation: str = msgspec.field(default_factory=lambda: uuid.uuid4().hex[:12])
    """Different on every start: work recorded by an earlier start of the same replica is an orphan."""
    workers: int = 128

    @property
    def replica_id(self) -> str:
        return self.replica or default_replica()


def from_settings(settings: Settings) -> ControllerConfig:
    """Raises ``ConfigError`` when the catalogue or the drain policy file cannot be used."""
    rules = RemediationConfig(
        dry_run=settings.dry_run,
        max_attempts=settings.reset_attempts,
        reset_falls_back_to_reboot=settings.reset_fallback_reboot,
        opt_out_label=settings.opt_out_label,
    )
    breaker = BreakerConfig(
        window=dt.timedelta(seconds=settings.breaker_window_seconds),
        max_share=settings.breaker_max_share,
        max_nodes=settings.breaker_max_nodes,
    )
    timing = Timing(
        verify=settings.verify_seconds,
        reset=settings.reset_timeout_seconds,
        reboot=settings.reboot_timeout_seconds,
        drain_pass=settings.drain_pass_seconds,
        drain_timeout=settings.drain_timeout_seconds,
        lease_renew=settings.lease_renew_seconds,
        sweep=settings.sweep_seconds,
    )
    return ControllerConfig(
        rules=rules,
        breaker=breaker,
        catalogue=read_catalogue(settings.catalogue_file),
        drain=read_drain_policy(settings.drain_policy_file),
        timing=timing,
        replica=settings.controller_id or default_replica(),
        workers=settings.controller_workers,
    )


def read_catalogue(path: str) -> Catalogue:
    if not path:
        return default_catalogue()
    try:
        return load_catalogue(Path(path))
    except (YamlError, OSError, ValueError) as exc:
        raise ConfigError(f"fault catalogue {path} (setting --catalogue-file / GPUDRA_CATALOGUE_FILE): {exc}") from exc


class _Duration(dt.timedelta):
    """A grace period or timeout as written: ``90s``, ``5m``, ``1h`` or a number of seconds."""


class _RuleDoc(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    mode: Literal["Immediate", "AllowCompletion", "DeleteAfterTimeout"]
    namespaces: list[str] = msgspec.field(default_factory=list)
    pod_labels: dict[str, str] = msgspec.field(default_factory=dict)
    grace: _Duration | None = None
    timeout: _Duration | None = None

    def rule(self) -> DrainRule:
        given = {name: value for name in ("grace", "timeout") if (value := getattr(self, name)) is not None}
        return DrainRule(mode=self.mode, namespaces=self.namespaces, pod_labels=self.pod_labels, **given)


class _PolicyDoc(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    rules: list[_RuleDoc] = msgspec.field(default_factory=list)
    default: _RuleDoc | None = None
    system_namespaces: list[str] | None = None

    def policy(self) -> DrainPolicy:
        given: dict[str, Any] = {"rules": [rule.rule() for rule in self.rules]}
        if self.default is not None:
            given["default"] = self.default.rule()
        if self.system_namespaces is not None:
            given["system_namespaces"] = frozenset(self.system_namespaces)
        return DrainPolicy(**given)


def read_drain_policy(path: str) -> DrainPolicy:
    """The drain policy YAML: ``rules`` (``mode``, ``namespaces``, ``pod_labels``, ``grace``, ``timeout``),
    ``default`` and ``system_namespaces``; unknown keys are refused, so a typo does not silently fall back to
    evicting everything."""
    if not path:
        return DrainPolicy()
    where = f"drain policy {path} (setting --drain-policy-file / GPUDRA_DRAIN_POLICY_FILE)"
    try:
        document, _ = decode_yaml(Path(path).read_text(), _PolicyDoc, path, dec_hook=_duration)
    except (YamlError, OSError) as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    return document.policy()


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(kind: type, value: Any) -> Any:
    if kind is not _Duration:
        raise NotImplementedError(kind)
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return _Duration(seconds=value)
    text = str(value).strip()
    if text[:-1].isdigit() and text[-1:] in _UNITS:
        return _Duration(seconds=int(text[:-1]) * _UNITS[text[-1]])
    raise ValueError(f"{value!r} is not a duration (90s, 5m, 1h or seconds)")
