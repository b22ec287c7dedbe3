"""Typed Kubernetes API errors, the same from the cluster and the standalone store.

Callers branch on the type (retry a ``Conflict`` with a fresh read, back off on ``TooManyRequests``, give up on
``Invalid``), never on HTTP codes; the message names the object and carries the server's own words, so a log line
is enough to act on.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar


class KubeError(Exception):
    """An API call failed; ``what`` names the object ("ResourceSlice node-a-gpu.gpudra.io-0")."""

    code: ClassVar[int] = 0

    def __init__(self, what: str, message: str, *, reason: str = "") -> None:
        super().__init__(f"{what}: {message}" if what else message)
        self.what = what
        self.message = message
        self.reason = reason


class BadRequest(KubeError):
    """The request itself is malformed (an unsupported field selector, a wrong apiVersion)."""

    code = 400


class Forbidden(KubeError):
    """RBAC (or the credentials) do not allow this call: fix the ClusterRole, not the code."""

    code = 403


class NotFound(KubeError):
    code = 404


class Conflict(KubeError):
    """The object changed since it was read (stale resourceVersion): read it again and redo the change."""

    code = 409


class AlreadyExists(KubeError):
    code = 409


class Expired(KubeError):
    """A watch asked for a resourceVersion the server no longer has: list again, then watch from the list."""

    code = 410


class Invalid(KubeError):
    """The server rejected the object's content (422); retrying the same object cannot help."""

    code = 422


class TooManyRequests(KubeError):
    """429: an eviction a PodDisruptionBudget forbids for now, or the server throttling; retry later."""

    code = 429


class Unavailable(KubeError):
    """The API server (or the standalone store) could not be reached or failed (5xx); transient."""

    code = 503


_BY_CODE: dict[int, type[KubeError]] = {
    400: BadRequest,
    401: Forbidden,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    410: Expired,
    422: Invalid,
    429: TooManyRequests,
}

# Errors worth retrying with the same request after a pause.
TRANSIENT: tuple[type[KubeError], ...] = (Unavailable, TooManyRequests)


def error_for(code: int, status: dict[str, Any] | None, what: str) -> KubeError:
    """The typed error for an HTTP answer; ``status`` is the server's ``Status`` body when it sent one."""
    status = status or {}
    message = str(status.get("message") or f"HTTP {code}")
    reason = str(status.get("reason") or "")
    if code == 409 and reason == "AlreadyExists":
        return AlreadyExists(what, message, reason=reason)
    if code == 401:
        message = f"the API server rejected the credentials: {message}"
    cls = _BY_CODE.get(code, Unavailable if code >= 500 or code == 0 else BadRequest)
    return cls(what, message, reason=reason)


def status_body(raw: str | bytes | None) -> dict[str, Any] | None:
    """The ``Status`` object of an error answer, or None when the body is not one (a proxy's HTML page)."""
    try:
        body = json.loads(raw or b"")
    except ValueError:
        return None
    return body if isinstance(body, dict) else None
