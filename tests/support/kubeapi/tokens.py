"""ServiceAccount tokens and ``POST /apis/authentication.k8s.io/v1/tokenreviews``, as kube-apiserver answers.

Tests issue tokens as the kubelet would project them: bound to a ServiceAccount, a pod and (KEP-4193) the
pod's node, with audiences and an expiry. A review answers what kube-apiserver answers: ``authenticated`` only
for a known, unexpired token whose bound pod still exists with the same UID, and whose audiences meet the
requested ones (``status.audiences`` is the overlap); ``user.extra`` carries the pod and node, each value a list.
The request body is validated against the official schema like every object the server receives.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field

from .errors import JsonObj, bad_request, invalid_object
from .store import Store
from .validation import Validator

PATH = ["apis", "authentication.k8s.io", "v1", "tokenreviews"]
NODE_NAME = "authentication.kubernetes.io/node-name"
POD_NAME = "authentication.kubernetes.io/pod-name"
POD_UID = "authentication.kubernetes.io/pod-uid"


@dataclass(frozen=True)
class IssuedToken:
    namespace: str
    service_account: str
    audiences: tuple[str, ...]
    expires: float
    pod: str = ""
    pod_uid: str = ""
    node: str = ""


@dataclass
class TokenAuthority:
    """The tokens this API server issued, and its reviews of them."""

    store: Store
    issued: dict[str, IssuedToken] = field(default_factory=dict)
    reviews: int = 0

    def issue(
        self,
        namespace: str,
        service_account: str,
        *,
        audiences: tuple[str, ...] = ("https://kubernetes.default.svc",),
        node: str = "",
        pod: str = "",
        pod_uid: str = "",
        lifetime: float = 3600.0,
    ) -> str:
        token = f"eyJ.{secrets.token_urlsafe(48)}.sig"  # opaque to clients, as a real one is
        self.issued[token] = IssuedToken(
            namespace=namespace,
            service_account=service_account,
            audiences=audiences,
            expires=time.time() + lifetime,
            pod=pod,
            pod_uid=pod_uid,
            node=node,
        )
        return token

    def review(self, body: JsonObj, validator: Validator) -> JsonObj:
        if not isinstance(body, dict) or body.get("kind") != "TokenReview":
            raise bad_request("the body is not a TokenReview")
        errors = validator.schema_errors(body)
        if errors:
            raise invalid_object("authentication.k8s.io", "TokenReview", "", errors)
        self.reviews += 1
        spec = body.get("spec") or {}
        wanted = list(spec.get("audiences") or [])
        status = self._status(str(spec.get("token", "")), wanted)
        return {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": spec, "status": status}

    def _status(self, token: str, wanted: list[str]) -> JsonObj:
        issued = self.issued.get(token)
        if issued is None:
            return {"authenticated": False, "error": "invalid bearer token, token lookup failed"}
        if issued.expires <= time.time():
            return {"authenticated": False, "error": "invalid bearer token, service account token has expired"}
        overlap = [audience for audience in wanted if audience in issued.audiences] if wanted else []
        if wanted and not overlap:
            return {"authenticated": False, "error": "invalid bearer token, token audiences is invalid"}
        if issued.pod and not self._pod_alive(issued):
            return {"authenticated": False, "error": f'pods "{issued.pod}" not found'}
        extra: dict[str, list[str]] = {}
        if issued.pod:
            extra |= {POD_NAME: [issued.pod], POD_UID: [issued.pod_uid]}
        if issued.node:
            extra[NODE_NAME] = [issued.node]
        return {
            "authenticated": True,
            "audiences": overlap or list(issued.audiences),
            "user": {
                "username": f"system:serviceaccount:{issued.namespace}:{issued.service_account}",
                "uid": f"uid-{issued.namespace}-{issued.service_account}",
                "groups": [
                    "system:serviceaccounts",
                    f"system:serviceaccounts:{issued.namespace}",
                    "system:authenticated",
                ],
                "extra": extra,
            },
        }

    def _pod_alive(self, issued: IssuedToken) -> bool:
        pod = self.store.get("pods", issued.pod, issued.namespace)
        return pod is not None and pod["metadata"].get("uid") == issued.pod_uid
