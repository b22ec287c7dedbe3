"""Kubernetes ``Status`` errors, worded like kube-apiserver's.

Clients branch on the HTTP code and on ``reason``; tests read ``message``. Keeping both as the
real server words them means code that parses them (retry on Conflict, give up on Invalid)
is exercised for real.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

JsonObj = dict[str, Any]

REASONS = {
    400: "BadRequest",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    410: "Expired",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
}


@dataclass(frozen=True)
class FieldError:
    """One entry of a validation ``field.ErrorList``: the path, the cause type and the text."""

    field: str
    reason: str
    message: str

    def render(self) -> str:
        return f"{self.field}: {self.message}"


def _show(value: Any) -> str:
    """Format a value like Go's field errors do (%q for strings)."""
    return json.dumps(value) if isinstance(value, str) else str(value)


def required(path: str, detail: str = "") -> FieldError:
    return FieldError(path, "FieldValueRequired", "Required value" + (f": {detail}" if detail else ""))


def invalid(path: str, value: Any, detail: str) -> FieldError:
    return FieldError(path, "FieldValueInvalid", f"Invalid value: {_show(value)}: {detail}")


def too_long(path: str, limit: int) -> FieldError:
    return FieldError(path, "FieldValueTooLong", f"Too long: may not be more than {limit} bytes")


def too_many(path: str, actual: int, limit: int) -> FieldError:
    return FieldError(path, "FieldValueTooMany", f"Too many: {actual}: must have at most {limit} items")


def duplicate(path: str, value: Any) -> FieldError:
    return FieldError(path, "FieldValueDuplicate", f"Duplicate value: {_show(value)}")


def forbidden(path: str, detail: str) -> FieldError:
    return FieldError(path, "FieldValueForbidden", f"Forbidden: {detail}")


class ApiError(Exception):
    """An error answer; ``status()`` is the ``Status`` body the server sends."""

    def __init__(self, code: int, message: str, *, reason: str = "", details: JsonObj | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason or REASONS.get(code, "Unknown")
        self.details = details

    def status(self) -> JsonObj:
        body: JsonObj = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            body["details"] = self.details
        return body


def _details(group: str, kind: str, name: str, **extra: Any) -> JsonObj:
    details: JsonObj = {"name": name, "kind": kind, **extra}
    if group:
        details["group"] = group
    return details


def not_found(group: str, plural: str, name: str) -> ApiError:
    qualified = f"{plural}.{group}" if group else plural
    return ApiError(404, f'{qualified} "{name}" not found', details=_details(group, plural, name))


def already_exists(group: str, plural: str, name: str) -> ApiError:
    qualified = f"{plural}.{group}" if group else plural
    return ApiError(
        409, f'{qualified} "{name}" already exists', reason="AlreadyExists", details=_details(group, plural, name)
    )


def conflict(group: str, plural: str, name: str, why: str = "") -> ApiError:
    qualified = f"{plural}.{group}" if group else plural
    why = why or "the object has been modified; please apply your changes to the latest version and try again"
    return ApiError(
        409, f'Operation cannot be fulfilled on {qualified} "{name}": {why}', details=_details(group, plural, name)
    )


def invalid_object(group: str, kind: str, name: str, errors: list[FieldError]) -> ApiError:
    """422 Invalid: one message listing every field error, plus one cause per error."""
    shown = errors[0].render() if len(errors) == 1 else "[" + ", ".join(e.render() for e in errors) + "]"
    group_kind = f"{kind}.{group}" if group else kind
    causes = [{"reason": e.reason, "message": e.message, "field": e.field} for e in errors]
    return ApiError(
        422, f'{group_kind} "{name}" is invalid: {shown}', details=_details(group, kind, name, causes=causes)
    )


def bad_request(message: str) -> ApiError:
    return ApiError(400, message)


def no_such_resource() -> ApiError:
    return ApiError(404, "the server could not find the requested resource", details={})


def internal(message: str) -> ApiError:
    return ApiError(500, f"Internal error occurred: {message}", details={"causes": [{"message": message}]})


def expired(message: str) -> ApiError:
    return ApiError(410, message)
