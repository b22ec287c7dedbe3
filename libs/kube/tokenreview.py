"""TokenReview (``authentication.k8s.io/v1``): who a bearer token belongs to, as the API server says.

A ServiceAccount token projected into a pod is bound to the pod and, since Kubernetes 1.30 (KEP-4193), names
the pod's node; the review reports both in ``user.extra`` (each value a list). Only a reviewed token's claims
are trusted: nothing here decodes a token itself.
"""

from __future__ import annotations

import msgspec

NODE_NAME = "authentication.kubernetes.io/node-name"
SERVICE_ACCOUNT_PREFIX = "system:serviceaccount:"


class ReviewedUser(msgspec.Struct, frozen=True, kw_only=True):
    username: str = ""
    uid: str = ""
    groups: list[str] = msgspec.field(default_factory=list)
    extra: dict[str, list[str]] = msgspec.field(default_factory=dict)

    @property
    def service_account(self) -> tuple[str, str] | None:
        """(namespace, name) for a ServiceAccount's token, else None."""
        if not self.username.startswith(SERVICE_ACCOUNT_PREFIX):
            return None
        namespace, _, name = self.username.removeprefix(SERVICE_ACCOUNT_PREFIX).partition(":")
        return (namespace, name) if namespace and name else None

    @property
    def node(self) -> str:
        """The node the token's pod runs on ("" when the token names none)."""
        return (self.extra.get(NODE_NAME) or [""])[0]


class TokenReviewStatus(msgspec.Struct, frozen=True, kw_only=True):
    authenticated: bool = False
    error: str = ""
    audiences: list[str] = msgspec.field(default_factory=list)
    user: ReviewedUser = msgspec.field(default_factory=ReviewedUser)


def token_review(token: str, audiences: list[str]) -> dict[str, object]:
    return {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenReview",
        "spec": {"token": token, "audiences": audiences},
    }
