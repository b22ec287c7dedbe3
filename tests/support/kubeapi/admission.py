"""Validating admission webhooks, called as kube-apiserver's ValidatingAdmissionWebhook plugin calls them.

Every ``admissionregistration.k8s.io/v1`` ValidatingWebhookConfiguration in the store is read on each write.
A webhook whose rules (operations, apiGroups, apiVersions, resources with ``*`` and ``res/sub`` forms, scope),
namespaceSelector and objectSelector match the write is sent an ``AdmissionReview`` v1 over HTTPS: to
``clientConfig.url``, or for a ``clientConfig.service`` to the address a test routed that Service to
(``route_service``), the certificate checked against ``caBundle`` (the system's roots without one) and, for a
Service, against the name ``<service>.<namespace>.svc`` as kube-apiserver checks it. Matching webhooks are
called together; the first refusal, in configuration order, is the answer.

- Refused (``allowed: false``): the webhook's Status with its message prefixed ``admission webhook "<name>"
  denied the request: `` and its code, raised to 400 when under it (k8s.io/apiserver webhook/errors
  ToStatusErr), so a webhook answering 422 Invalid gives the client 422 Invalid.
- Not called (refused connection, TLS failure, a timeout after ``timeoutSeconds``, an answer that is not an
  AdmissionReview v1 for this request's uid, an HTTP error): ``failurePolicy`` decides. Fail answers 500
  ``Internal error occurred: failed calling webhook "<name>": ...``; Ignore admits the write.

As in kube-apiserver, webhooks are not called for the admissionregistration.k8s.io objects themselves (no
configuration can lock itself in), nor for evictions, whose pod deletion skips admission. ``matchConditions``
(CEL) and ``matchPolicy`` conversion are not modelled: a configuration with matchConditions is refused with
400 rather than called without them, and each resource is served at one version, where Equivalent and Exact
agree. Writes made directly on the store skip admission, as they skip validation.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import ssl
import uuid
from collections.abc import Iterator
from typing import Any

import aiohttp

from .errors import ApiError, JsonObj, bad_request, internal
from .operations import Change
from .resources import ResourceType
from .selectors import selector_matches
from .store import Store

_log = logging.getLogger(__name__)
GROUP = "admissionregistration.k8s.io"
REVIEW_VERSION = "admission.k8s.io/v1"
USER = {"username": "kubernetes-admin", "groups": ["kubeadm:cluster-admins", "system:authenticated"]}
"""Who every request to the test server is: it does not authenticate."""
_OPTIONS = {"CREATE": "CreateOptions", "UPDATE": "UpdateOptions", "DELETE": "DeleteOptions"}


class CallFailed(Exception):
    """The webhook could not be asked, or did not answer an AdmissionReview: ``ErrCallingWebhook``."""


class ValidatingWebhooks:
    """Finds the webhooks a write matches, calls them, and answers for them (``admit``)."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._services: dict[tuple[str, str], str] = {}
        self.reviews: list[JsonObj] = []
        """Every AdmissionReview sent, in order."""

    def route_service(self, namespace: str, name: str, address: str) -> None:
        """Where ``clientConfig.service`` namespace/name is reached: ``host:port`` (its port is then the Service's
        own, whatever the configuration names)."""
        self._services[(namespace, name)] = address

    async def admit(self, change: Change) -> None:
        """Return when every matching webhook admits ``change`` (or fails open); raise the refusal otherwise."""
        if change.rt.group == GROUP:
            _refuse_unmodelled(change)
            return
        hooks = list(self._matching(change))
        if not hooks:
            return
        refusals = await asyncio.gather(*(self._ask(hook, change) for hook in hooks))
        for refusal in refusals:
            if refusal is not None:
                raise refusal

    # --- matching --------------------------------------------------------------------------------------

    def _matching(self, change: Change) -> Iterator[JsonObj]:
        configurations = self._store.registry.resolve(f"validatingwebhookconfigurations.{GROUP}")
        for configuration in self._store.objects(configurations):
            for hook in configuration.get("webhooks") or []:
                if (
                    any(_rule_matches(rule, change) for rule in hook.get("rules") or [])
                    and self._namespace_matches(hook.get("namespaceSelector"), change)
                    and _object_matches(hook.get("objectSelector"), change)
                ):
                    yield hook

    def _namespace_matches(self, selector: JsonObj | None, change: Change) -> bool:
        """Namespaced objects by their namespace's labels (every namespace carries kubernetes.io/metadata.name),
        a Namespace by its own; other cluster-scoped objects always."""
        if _is_namespace(change.rt):
            return _object_matches(selector, change)
        if not change.rt.namespaced:
            return True
        namespace = change.namespace or ""
        stored = self._store.lookup(self._store.registry.resolve("namespaces"), None, namespace) or {}
        labels = dict((stored.get("metadata") or {}).get("labels") or {})
        labels["kubernetes.io/metadata.name"] = namespace
        return selector_matches(selector, labels)

    # --- calling ---------------------------------------------------------------------------------------

    async def _ask(self, hook: JsonObj, change: Change) -> ApiError | None:
        """The hook's refusal, None when it admits (or cannot be asked and fails open)."""
        try:
            result = await self._call(hook, change)
        except CallFailed as exc:
            reason = f'failed calling webhook "{hook["name"]}": {exc}'
            if hook.get("failurePolicy", "Fail") == "Ignore":
                _log.warning("Failed calling webhook, failing open %s: %s", hook["name"], reason)
                return None
            return internal(reason)
        if result.get("allowed") is True:
            return None
        return _refusal(hook["name"], result.get("status") or {})

    async def _call(self, hook: JsonObj, change: Change) -> JsonObj:
        if "v1" not in (hook.get("admissionReviewVersions") or []):
            raise CallFailed("webhook does not accept known AdmissionReview versions: v1")
        url, server_hostname = self._url(hook["clientConfig"])
        timeout = hook.get("timeoutSeconds", 10)
        review = _review(change)
        self.reviews.append(review)
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session,
                session.post(
                    f"{url}?timeout={timeout}s",
                    json=review,
                    ssl=_trust(hook["clientConfig"].get("caBundle")),
                    server_hostname=server_hostname,
                ) as response,
            ):
                body = await response.read()
                status = response.status
        except TimeoutError:
            raise CallFailed(
                f'failed to call webhook: Post "{url}?timeout={timeout}s": context deadline exceeded'
            ) from None
        except aiohttp.ClientError as exc:
            raise CallFailed(f'failed to call webhook: Post "{url}?timeout={timeout}s": {exc}') from None
        if not 200 <= status < 300:
            raise CallFailed(
                f"failed to call webhook: the server responded with the status code {status} but did not return "
                f"more information: {body[:200]!r}"
            )
        return _result(body, review["request"]["uid"])

    def _url(self, client: JsonObj) -> tuple[str, str | None]:
        """Where to post, and the name the certificate must carry when it is not the URL's host."""
        if client.get("url"):
            return str(client["url"]), None
        service = client["service"]
        address = self._services.get((service["namespace"], service["name"]))
        if address is None:
            raise CallFailed(f'failed to call webhook: service "{service["name"]}" not found')
        return f"https://{address}{service.get('path') or ''}", f"{service['name']}.{service['namespace']}.svc"


def _refuse_unmodelled(change: Change) -> None:
    """A configuration whose webhooks would be called differently here than in a cluster is not taken."""
    for hook in (change.obj or {}).get("webhooks") or []:
        if hook.get("matchConditions"):
            raise bad_request(
                f"webhook {hook.get('name')}: matchConditions (CEL) are not implemented by the test API server"
            )


def _is_namespace(rt: ResourceType) -> bool:
    return (rt.group, rt.plural) == ("", "namespaces")


def _rule_matches(rule: JsonObj, change: Change) -> bool:
    """k8s.io/apiserver webhook/rules Matcher: operation, group, version, resource/subresource, scope."""
    rt = change.rt
    operations, groups, versions = rule.get("operations") or [], rule.get("apiGroups") or [], rule.get("apiVersions")
    if not ({"*", change.operation} & set(operations) and {"*", rt.group} & set(groups)):
        return False
    if not {"*", rt.version} & set(versions or []):
        return False
    resource_matches = False
    for entry in rule.get("resources") or []:
        resource, _, sub = entry.partition("/")
        if resource in ("*", rt.plural) and sub in ("*", change.subresource or ""):
            resource_matches = True
    scope = rule.get("scope", "*")
    cluster = _is_namespace(rt) or not rt.namespaced
    return resource_matches and (scope == "*" or (scope == "Cluster") == cluster)


def _object_matches(selector: JsonObj | None, change: Change) -> bool:
    """The object's labels or, for an update or delete, the stored object's."""
    return any(
        selector_matches(selector, (obj.get("metadata") or {}).get("labels") or {})
        for obj in (change.obj, change.old)
        if obj is not None
    )


def _review(change: Change) -> JsonObj:
    rt = change.rt
    kind = {"group": rt.group, "version": rt.version, "kind": rt.kind}
    resource = {"group": rt.group, "version": rt.version, "resource": rt.plural}
    request: JsonObj = {
        "uid": str(uuid.uuid4()),
        "kind": kind,
        "resource": resource,
        "requestKind": kind,
        "requestResource": resource,
        "name": change.name,
        "operation": change.operation,
        "userInfo": USER,
        "object": change.obj,
        "oldObject": change.old,
        "dryRun": False,
        "options": {"apiVersion": "meta.k8s.io/v1", "kind": _OPTIONS[change.operation]},
    }
    if change.subresource:
        request |= {"subResource": change.subresource, "requestSubResource": change.subresource}
    if change.namespace:
        request["namespace"] = change.namespace
    return {"apiVersion": REVIEW_VERSION, "kind": "AdmissionReview", "request": request}


def _trust(ca_bundle: str | None) -> ssl.SSLContext:
    if not ca_bundle:
        return ssl.create_default_context()
    try:
        return ssl.create_default_context(cadata=base64.b64decode(ca_bundle).decode())
    except (ValueError, ssl.SSLError) as exc:
        raise CallFailed(f"could not get REST client: unable to load root certificates: {exc}") from None


def _result(body: bytes, uid: str) -> JsonObj:
    """The AdmissionResponse, checked as webhookrequest.VerifyAdmissionResponse does."""
    try:
        answer: Any = json.loads(body)
    except ValueError as exc:
        raise CallFailed(f"received invalid webhook response: {exc}") from None
    if not isinstance(answer, dict) or (answer.get("apiVersion"), answer.get("kind")) != (
        REVIEW_VERSION,
        "AdmissionReview",
    ):
        got = f"{answer.get('apiVersion')}, Kind={answer.get('kind')}" if isinstance(answer, dict) else "no object"
        wanted = f"{REVIEW_VERSION}, Kind=AdmissionReview"
        raise CallFailed(f"received invalid webhook response: expected webhook response of {wanted}, got {got}")
    response = answer.get("response")
    if not isinstance(response, dict):
        raise CallFailed("received invalid webhook response: webhook response was absent")
    if response.get("uid") != uid:
        raise CallFailed(
            f'received invalid webhook response: expected response.uid="{uid}", got "{response.get("uid")}"'
        )
    if response.get("patch") or response.get("patchType"):
        raise CallFailed("received invalid webhook response: validating webhook may not return a patch")
    return response


def _refusal(name: str, status: JsonObj) -> ApiError:
    """webhook/errors ToStatusErr: the webhook's Status, its code at least 400, its message saying who refused."""
    denied = f'admission webhook "{name}" denied the request'
    if status.get("message"):
        message = f"{denied}: {status['message']}"
    elif status.get("reason"):
        message = f"{denied}: {status['reason']}"
    else:
        message = f"{denied} without explanation"
    code = status.get("code")
    return ApiError(
        max(code if isinstance(code, int) else 0, 400),
        message,
        reason=str(status.get("reason") or ""),
        details=status.get("details"),
    )
