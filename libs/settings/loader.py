"""Build a settings struct from command-line flags and environment variables.

Every field of a msgspec struct becomes both ``--field-name`` and ``GPUDRA_FIELD_NAME``, so the names in
docs, Kustomize and docker-compose are derived from one place and can never drift. Precedence: flag, then
environment, then the field's default. Values are validated by msgspec at the boundary: a bad value is a
``SettingsError`` naming the flag and variable, never a traceback from deep inside a service.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import msgspec

PREFIX = "GPUDRA_"

S = TypeVar("S", bound=msgspec.Struct)


class SettingsError(ValueError):
    """A setting has a value that cannot be used; the message names the flag and the variable."""


def env_name(field: str) -> str:
    return PREFIX + field.upper()


def flag_name(field: str) -> str:
    return "--" + field.replace("_", "-")


def _describe(field: msgspec.structs.FieldInfo) -> str:
    info = msgspec.inspect.type_info(field.type)
    if isinstance(info, msgspec.inspect.Metadata):
        return str((info.extra_json_schema or {}).get("description", ""))
    return ""


def _parser(cls: type[msgspec.Struct], prog: str | None, description: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    for field in msgspec.structs.fields(cls):
        default = None if field.default is msgspec.NODEFAULT else field.default
        parser.add_argument(
            flag_name(field.name),
            dest=field.name,
            default=None,
            help=f"{_describe(field)} (env {env_name(field.name)}, default {default!r})",
        )
    return parser


def load_settings(
    cls: type[S],
    argv: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
    *,
    prog: str | None = None,
    description: str | None = None,
) -> S:
    """Read ``cls`` from ``argv`` (flags) and ``env`` (default: the process environment)."""
    environ = os.environ if env is None else env
    namespace = _parser(cls, prog, description).parse_args(list(argv) if argv is not None else [])
    raw: dict[str, Any] = {}
    for field in msgspec.structs.fields(cls):
        value = getattr(namespace, field.name)
        if value is None:
            value = environ.get(env_name(field.name))
        if value is not None:
            raw[field.name] = _coerce(field, value)
    try:
        return msgspec.convert(raw, cls, strict=False)
    except msgspec.ValidationError as exc:
        raise SettingsError(_explain(exc, cls)) from None


def _coerce(field: msgspec.structs.FieldInfo, value: str) -> Any:
    """Lists come from comma-separated strings; everything else is left to msgspec's lax conversion."""
    info = msgspec.inspect.type_info(field.type)
    while isinstance(info, msgspec.inspect.Metadata):
        info = info.type
    if isinstance(info, msgspec.inspect.ListType | msgspec.inspect.TupleType | msgspec.inspect.VarTupleType):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


def _choices(cls: type[msgspec.Struct], name: str) -> str:
    """For a Literal field, the allowed values, so the error says what would have worked."""
    for field in msgspec.structs.fields(cls):
        if field.name == name:
            info = msgspec.inspect.type_info(field.type)
            while isinstance(info, msgspec.inspect.Metadata):
                info = info.type
            if isinstance(info, msgspec.inspect.LiteralType):
                return " (one of: " + ", ".join(repr(value) for value in info.values) + ")"
    return ""


def _explain(exc: msgspec.ValidationError, cls: type[msgspec.Struct]) -> str:
    message = str(exc)
    marker = "`$."
    if marker in message:
        field = message.split(marker, 1)[1].split("`", 1)[0].split("[", 1)[0]
        return f"setting {flag_name(field)} / {env_name(field)}: {message}{_choices(cls, field)}"
    return f"settings: {message}"
