"""ValidatingWebhookConfigurations: which writes are sent, over real HTTPS, and what the client then gets.

A small webhook (aiohttp over TLS, certificate from trustme) records each AdmissionReview and answers as the
test tells it; the client is kubernetes-asyncio over HTTP, as everywhere else.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import trustme
from aiohttp import web
from kubernetes_asyncio.client import (
    AdmissionregistrationV1Api,
    ApiClient,
    CoordinationV1Api,
    CoreV1Api,
    ResourceV1Api,
)
from kubernetes_asyncio.client.exceptions import ApiException

from libs.natsserver import free_port
from tests.kubeapi.objects import resource_claim, status_of
from tests.support.kubeapi import KubeApiServer
from tests.support.kubeapi.validation import builtin_validator, schema_version

Obj = dict[str, Any]
Answer = Callable[[Obj], Obj]
NAME = "check.claims.example.com"


def allow(request: Obj) -> Obj:
    return {"uid": request["uid"], "allowed": True}


class FakeWebhook:
    """An HTTPS webhook on 127.0.0.1 that records what it is sent and answers with ``answer``."""

    def __init__(self, directory: Path) -> None:
        self.ca = trustme.CA()
        leaf = self.ca.issue_cert("127.0.0.1", "hooks.webhooks.svc")
        self.cert, self.key = directory / "tls.crt", directory / "tls.key"
        self.cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
        self.key.write_bytes(leaf.private_key_pem.bytes())
        self.reviews: list[Obj] = []
        self.answer: Answer = allow
        self.delay = 0.0
        self.port = 0

    async def _handle(self, request: web.Request) -> web.Response:
        review = await request.json()
        self.reviews.append(review)
        await asyncio.sleep(self.delay)
        body = {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "response": self.answer(review["request"]),
        }
        return web.json_response(body)

    @property
    def ca_bundle(self) -> str:
        return base64.b64encode(self.ca.cert_pem.bytes()).decode()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}/validate"

    def hook(self, **fields: Any) -> Obj:
        """A webhook entry of a configuration that calls this webhook for claims."""
        rules = [
            {
                "apiGroups": ["resource.k8s.io"],
                "apiVersions": ["v1"],
                "operations": ["CREATE"],
                "resources": ["resourceclaims"],
            }
        ]
        return {
            "name": NAME,
            "clientConfig": {"url": self.url, "caBundle": self.ca_bundle},
            "rules": rules,
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            **fields,
        }


@pytest_asyncio.fixture
async def hook_server(tmp_path: Path) -> AsyncIterator[FakeWebhook]:
    fake = FakeWebhook(tmp_path)
    app = web.Application()
    app.router.add_post("/validate", fake._handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(fake.cert, fake.key)
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    fake.port = runner.addresses[0][1]
    try:
        yield fake
    finally:
        await runner.cleanup()


@pytest_asyncio.fixture
async def apis(kube_api: KubeApiServer) -> AsyncIterator[tuple[AdmissionregistrationV1Api, ResourceV1Api, ApiClient]]:
    async with kube_api.api_client() as client:
        yield AdmissionregistrationV1Api(client), ResourceV1Api(client), client


def configuration(*hooks: Obj, name: str = "checks") -> Obj:
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": list(hooks),
    }


async def refused(call: Any) -> tuple[int, Obj]:
    with pytest.raises(ApiException) as raised:
        await call
    return raised.value.status, status_of(raised.value)


async def test_a_configuration_is_validated_and_defaulted_as_kube_apiserver_does(
    apis: Any, hook_server: FakeWebhook
) -> None:
    admission, _, _ = apis
    created = await admission.create_validating_webhook_configuration(configuration(hook_server.hook()))
    hook = created.webhooks[0]
    assert (hook.failure_policy, hook.match_policy, hook.timeout_seconds) == ("Fail", "Equivalent", 10)
    assert hook.rules[0].scope == "*"
    assert (hook.namespace_selector.to_dict(), hook.object_selector.to_dict()) == (
        {"match_expressions": None, "match_labels": None},
        {"match_expressions": None, "match_labels": None},
    )
    bad = [
        (hook_server.hook(name="check"), "should be a domain with at least three segments"),
        ({k: v for k, v in hook_server.hook().items() if k != "sideEffects"}, "sideEffects: Required value"),
        (hook_server.hook(sideEffects="Some"), 'Unsupported value: "Some"'),
        (hook_server.hook(timeoutSeconds=31), "the timeout value must be between 1 and 30 seconds"),
        (hook_server.hook(clientConfig={"url": "http://127.0.0.1/validate"}), "'https' is the only allowed URL scheme"),
        (hook_server.hook(clientConfig={}), "exactly one of url or service is required"),
    ]
    for index, (entry, problem) in enumerate(bad):
        code, status = await refused(
            admission.create_validating_webhook_configuration(configuration(entry, name=f"bad-{index}"))
        )
        assert (code, status["reason"]) == (422, "Invalid"), status
        assert problem in status["message"]
    cel = hook_server.hook(matchConditions=[{"name": "all", "expression": "true"}])
    code, status = await refused(admission.create_validating_webhook_configuration(configuration(cel, name="cel")))
    assert code == 400
    assert "matchConditions (CEL) are not implemented" in status["message"]


async def test_the_objects_stored_validate_against_the_136_schema(
    apis: Any, hook_server: FakeWebhook, kube_api: KubeApiServer
) -> None:
    admission, _, _ = apis
    await admission.create_validating_webhook_configuration(configuration(hook_server.hook()))
    stored = kube_api.store.get("validatingwebhookconfigurations", "checks")
    assert stored is not None
    validator = builtin_validator(schema_version("1.36"), stored["apiVersion"], stored["kind"])
    assert [error.message for error in validator.iter_errors(stored)] == []


async def test_rules_choose_which_writes_are_sent(apis: Any, hook_server: FakeWebhook, kube_api: KubeApiServer) -> None:
    admission, resource, client = apis
    status_rule = {
        "apiGroups": ["resource.k8s.io"],
        "apiVersions": ["*"],
        "operations": ["UPDATE"],
        "resources": ["*/status"],
    }
    cluster_rule = {
        "apiGroups": ["*"],
        "apiVersions": ["*"],
        "operations": ["*"],
        "resources": ["*"],
        "scope": "Cluster",
    }
    hook = hook_server.hook()
    hook["rules"] += [status_rule, cluster_rule]
    await admission.create_validating_webhook_configuration(configuration(hook))
    leases: Any = CoordinationV1Api(client)
    core: Any = CoreV1Api(client)
    await resource.create_namespaced_resource_claim("default", resource_claim("c"))  # CREATE resourceclaims
    await resource.patch_namespaced_resource_claim("c", "default", {"metadata": {"labels": {"a": "b"}}})  # not sent
    await resource.patch_namespaced_resource_claim_status("c", "default", {"status": {"devices": []}})  # */status
    await leases.create_namespaced_lease(
        "default", {"metadata": {"name": "l"}, "spec": {}}
    )  # namespaced: not Cluster scope
    await resource.delete_namespaced_resource_claim("c", "default", _preload_content=False)  # namespaced: not sent
    node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n"}}
    await core.create_node(node)  # Cluster scope: sent
    sent = [
        (r["request"]["operation"], r["request"]["resource"]["resource"], r["request"].get("subResource"))
        for r in hook_server.reviews
    ]
    assert sent == [
        ("CREATE", "resourceclaims", None),
        ("UPDATE", "resourceclaims", "status"),
        ("CREATE", "nodes", None),
    ]
    first = hook_server.reviews[0]["request"]
    assert first["namespace"] == "default"
    assert first["object"]["metadata"]["uid"], "kube-apiserver fills uid before admission"
    assert first["oldObject"] is None
    assert first["options"] == {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"}
    update = hook_server.reviews[1]["request"]
    assert update["oldObject"]["metadata"]["name"] == "c"
    assert "namespace" not in hook_server.reviews[2]["request"]


async def test_deletes_are_sent_with_the_stored_object(apis: Any, hook_server: FakeWebhook) -> None:
    admission, resource, _ = apis
    await resource.create_namespaced_resource_claim("default", resource_claim("c"))
    hook = hook_server.hook()
    hook["rules"][0]["operations"] = ["DELETE"]
    await admission.create_validating_webhook_configuration(configuration(hook))
    await resource.delete_collection_namespaced_resource_claim("default")
    (review,) = hook_server.reviews
    assert (review["request"]["operation"], review["request"]["object"]) == ("DELETE", None)
    assert review["request"]["oldObject"]["metadata"]["name"] == "c"


async def test_selectors_choose_by_the_namespaces_and_the_objects_labels(
    apis: Any, hook_server: FakeWebhook, kube_api: KubeApiServer
) -> None:
    admission, resource, client = apis
    hook = hook_server.hook(
        namespaceSelector={"matchLabels": {"env": "prod"}},
        objectSelector={"matchExpressions": [{"key": "skip", "operator": "DoesNotExist"}]},
    )
    await admission.create_validating_webhook_configuration(configuration(hook))
    core: Any = CoreV1Api(client)
    await core.create_namespace({"metadata": {"name": "dev"}})
    await core.create_namespace({"metadata": {"name": "prod", "labels": {"env": "prod"}}})
    await resource.create_namespaced_resource_claim("dev", resource_claim("a", "dev"))
    skipped = resource_claim("b", "prod")
    skipped["metadata"]["labels"] = {"skip": "yes"}
    await resource.create_namespaced_resource_claim("prod", skipped)
    await resource.create_namespaced_resource_claim("prod", resource_claim("c", "prod"))
    assert [r["request"]["name"] for r in hook_server.reviews] == ["c"]


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ({"code": 403, "reason": "Forbidden", "message": "no claims today"}, (403, "Forbidden", "no claims today")),
        ({"code": 422, "reason": "Invalid", "message": "bad config"}, (422, "Invalid", "bad config")),
        ({"code": 200, "message": "nope"}, (400, "BadRequest", "nope")),
        ({"reason": "NotToday"}, (400, "NotToday", "NotToday")),
    ],
)
async def test_a_refusal_reaches_the_client_as_kube_apiserver_words_it(
    apis: Any, hook_server: FakeWebhook, kube_api: KubeApiServer, status: Obj, expected: tuple[int, str, str]
) -> None:
    """The webhook's code (at least 400) and reason, its message after who refused."""
    admission, resource, _ = apis
    code, reason, message = expected
    hook_server.answer = lambda request: {"uid": request["uid"], "allowed": False, "status": status}
    await admission.create_validating_webhook_configuration(configuration(hook_server.hook()))
    got_code, got = await refused(resource.create_namespaced_resource_claim("default", resource_claim("c")))
    assert (got_code, got["code"], got["reason"]) == (code, code, reason)
    assert got["message"] == f'admission webhook "{NAME}" denied the request: {message}'
    assert kube_api.store.get("resourceclaims", "c") is None


async def test_a_refusal_without_a_status_is_without_explanation(apis: Any, hook_server: FakeWebhook) -> None:
    admission, resource, _ = apis
    hook_server.answer = lambda request: {"uid": request["uid"], "allowed": False}
    await admission.create_validating_webhook_configuration(configuration(hook_server.hook()))
    _, got = await refused(resource.create_namespaced_resource_claim("default", resource_claim("c")))
    assert got["message"] == f'admission webhook "{NAME}" denied the request without explanation'


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        (lambda request: {"uid": "someone-else", "allowed": True}, 'expected response.uid="'),
        (
            lambda request: {"uid": request["uid"], "allowed": True, "patch": "W10=", "patchType": "JSONPatch"},
            "may not return a patch",
        ),
    ],
    ids=["uid", "patch"],
)
async def test_an_answer_that_is_not_for_this_request_is_a_failed_call(
    apis: Any, hook_server: FakeWebhook, answer: Answer, problem: str
) -> None:
    admission, resource, _ = apis
    hook_server.answer = answer
    await admission.create_validating_webhook_configuration(configuration(hook_server.hook()))
    code, got = await refused(resource.create_namespaced_resource_claim("default", resource_claim("c")))
    assert (code, got["reason"]) == (500, "InternalError")
    assert got["message"].startswith(
        f'Internal error occurred: failed calling webhook "{NAME}": received invalid webhook response: '
    )
    assert problem in got["message"]


@pytest.mark.parametrize("policy", ["Fail", "Ignore"])
async def test_failure_policy_decides_when_the_webhook_cannot_be_reached(
    apis: Any, hook_server: FakeWebhook, kube_api: KubeApiServer, policy: str
) -> None:
    admission, resource, _ = apis
    down = hook_server.hook(failurePolicy=policy, clientConfig={"url": f"https://127.0.0.1:{free_port()}/validate"})
    await admission.create_validating_webhook_configuration(configuration(down))
    if policy == "Ignore":
        await resource.create_namespaced_resource_claim("default", resource_claim("c"))
        assert kube_api.store.get("resourceclaims", "c") is not None
        return
    code, got = await refused(resource.create_namespaced_resource_claim("default", resource_claim("c")))
    assert (code, got["reason"]) == (500, "InternalError")
    assert got["message"].startswith(
        f'Internal error occurred: failed calling webhook "{NAME}": failed to call webhook: Post "https://127.0.0.1:'
    )
    assert kube_api.store.get("resourceclaims", "c") is None


async def test_a_webhook_slower_than_its_timeout_is_a_failed_call(apis: Any, hook_server: FakeWebhook) -> None:
    admission, resource, _ = apis
    hook_server.delay = 5.0
    await admission.create_validating_webhook_configuration(configuration(hook_server.hook(timeoutSeconds=1)))
    started = time.monotonic()
    _, got = await refused(resource.create_namespaced_resource_claim("default", resource_claim("c")))
    assert time.monotonic() - started < 3
    assert got["message"].endswith('?timeout=1s": context deadline exceeded')


async def test_the_certificate_is_checked_against_the_ca_bundle_and_the_services_name(
    apis: Any, hook_server: FakeWebhook, kube_api: KubeApiServer
) -> None:
    admission, resource, _ = apis
    stranger = base64.b64encode(trustme.CA().cert_pem.bytes()).decode()
    await admission.create_validating_webhook_configuration(
        configuration(hook_server.hook(clientConfig={"url": hook_server.url, "caBundle": stranger}))
    )
    _, got = await refused(resource.create_namespaced_resource_claim("default", resource_claim("c")))
    assert "certificate verify failed" in got["message"]
    service = {"namespace": "webhooks", "path": "/validate"}
    await admission.replace_validating_webhook_configuration(
        "checks",
        configuration(
            hook_server.hook(
                name="a.example.com",
                clientConfig={"service": {**service, "name": "hooks"}, "caBundle": hook_server.ca_bundle},
            ),
            hook_server.hook(
                name="b.example.com",
                clientConfig={"service": {**service, "name": "other"}, "caBundle": hook_server.ca_bundle},
            ),
        ),
    )
    for name in ("hooks", "other"):
        kube_api.webhooks.route_service("webhooks", name, f"127.0.0.1:{hook_server.port}")
    _, got = await refused(resource.create_namespaced_resource_claim("default", resource_claim("c")))
    assert got["message"].startswith('Internal error occurred: failed calling webhook "b.example.com"'), (
        "only hooks.webhooks.svc is certified"
    )
    assert "other.webhooks.svc" in got["message"]
    assert len(hook_server.reviews) == 1, "a.example.com was called"


async def test_configurations_themselves_are_never_sent(apis: Any, hook_server: FakeWebhook) -> None:
    """No configuration can lock itself (or its fix) out."""
    admission, _, _ = apis
    everything = {"apiGroups": ["*"], "apiVersions": ["*"], "operations": ["*"], "resources": ["*"]}
    await admission.create_validating_webhook_configuration(configuration(hook_server.hook(rules=[everything])))
    await admission.create_validating_webhook_configuration(configuration(hook_server.hook(), name="second"))
    await admission.delete_validating_webhook_configuration("second")
    assert hook_server.reviews == []
