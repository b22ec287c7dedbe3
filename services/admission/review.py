"""``admission.k8s.io/v1`` AdmissionReview: what the API server sends, read strictly at the door, and the answer.

Only the fields the decision reads are declared; the others (userInfo, options, requestKind, ...) are ignored, so
an API server that adds fields in a later version still gets an answer. What is declared must be there with its
type: a body that is not JSON, not an AdmissionReview v1, or has no request uid is a ``BadReview`` naming what is
wrong, answered with HTTP 400 (the API server then applies the webhook's failurePolicy).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

API_VERSION = "admission.k8s.io/v1"
KIND = "AdmissionReview"

Operation = Literal["CREATE", "UPDATE", "DELETE", "CONNECT"]


class BadReview(ValueError):
    """The body is not an AdmissionReview this webhook can answer."""


class GroupVersionResource(msgspec.Struct, frozen=True, kw_only=True):
    group: str = ""
    version: str
    resource: str


class AdmissionRequest(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    uid: Annotated[str, msgspec.Meta(min_length=1)]
    resource: GroupVersionResource
    sub_resource: str = ""
    name: str = ""
    namespace: str = ""
    operation: Operation
    object: dict[str, Any] | None = None
    old_object: dict[str, Any] | None = None


class _Review(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    api_version: Literal["admission.k8s.io/v1"]
    kind: Literal["AdmissionReview"]
    request: AdmissionRequest


class StatusCause(msgspec.Struct, frozen=True, kw_only=True):
    reason: str
    message: str
    field: str


class StatusDetails(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    group: str
    kind: str
    causes: tuple[StatusCause, ...]


class Status(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A ``meta/v1`` Status: what the API server turns into the error its client gets."""

    status: Literal["Failure"]
    code: int
    reason: str
    message: str
    details: StatusDetails | None = None


class AdmissionResponse(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    uid: str
    allowed: bool
    status: Status | None = None


class _Answer(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    api_version: str = API_VERSION
    kind: str = KIND
    response: AdmissionResponse


def read_review(body: bytes) -> AdmissionRequest:
    """The request of an AdmissionReview v1, or ``BadReview``."""
    try:
        return msgspec.json.decode(body, type=_Review).request
    except msgspec.ValidationError as exc:
        raise BadReview(f"not an {API_VERSION} {KIND}: {exc}") from None
    except msgspec.DecodeError as exc:
        raise BadReview(f"not JSON: {exc}") from None


def answer(response: AdmissionResponse) -> bytes:
    """The AdmissionReview v1 that carries ``response`` back."""
    return msgspec.json.encode(_Answer(response=response))
