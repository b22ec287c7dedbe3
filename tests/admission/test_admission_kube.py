"""The deployed webhook configuration, in the Kubernetes API test server, calling the webhook over HTTPS.

The ValidatingWebhookConfiguration is the one ``kubectl kustomize deploy/kustomize/base`` builds, checked against
the Kubernetes 1.36 strict schema, its ``caBundle`` set and its Service routed to the running webhook (whose
certificate is for the Service's name, as kube-apiserver checks it). Claims are then written with the
kubernetes client over HTTP, as kubectl and controllers write them.
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from kubernetes_asyncio.client import AdmissionregistrationV1Api, ApiClient, ResourceV1Api
from kubernetes_asyncio.client.exceptions import ApiException

from services.admission.service import Webhook
from services.compute_domain.api import decode_domain
from services.compute_domain.controller.render import workload_claim_template
from tests.admission.admission_support import (
    CD_DRIVER,
    Authority,
    Obj,
    channel_config,
    claim_template,
    device_class,
    gpu_config,
    opaque,
    resource_claim,
    webhook,
)
from tests.deploy.test_deploy_kustomize import BASE, build, one
from tests.kubeapi.objects import status_of
from tests.support.kubeapi import KubeApiServer
from tests.support.kubeapi.validation import builtin_validator, schema_version

WEBHOOK = "opaque-config.gpu.gpudra.io"
BAD = opaque(gpu_config(sharing={"strategy": "MPS", "mpsConfg": {"defaultActiveThreadPercentage": 50}}))
GOOD = opaque(gpu_config(sharing={"strategy": "TimeSlicing", "timeSlicingConfig": {"interval": "Short"}}))


def deployed_configuration(authority: Authority) -> Obj:
    """The base's ValidatingWebhookConfiguration, with the caBundle cert-manager (or you) would set."""
    configuration = copy.deepcopy(one(build(BASE), "ValidatingWebhookConfiguration", "gpudra-opaque-config"))
    for hook in configuration["webhooks"]:
        hook["clientConfig"]["caBundle"] = authority.ca_bundle
    validator = builtin_validator(schema_version("1.36"), configuration["apiVersion"], configuration["kind"])
    assert [error.message for error in validator.iter_errors(configuration)] == []
    return configuration


class Cluster:
    def __init__(self, kube_api: KubeApiServer, client: ApiClient, authority: Authority) -> None:
        self.kube_api = kube_api
        # Any: the client's stubs want model objects; it takes the dicts these tests send (tests/kubeapi/conftest.py).
        self.resource: Any = ResourceV1Api(client)
        self.admission: Any = AdmissionregistrationV1Api(client)
        self.authority = authority

    async def configure(self, **changes: Any) -> None:
        """Apply the deployed configuration (with ``changes`` to its webhook), as kubectl apply would."""
        configuration = deployed_configuration(self.authority)
        configuration["webhooks"][0] |= changes
        name = configuration["metadata"]["name"]
        if self.kube_api.store.get("validatingwebhookconfigurations", name) is None:
            await self.admission.create_validating_webhook_configuration(configuration)
        else:
            await self.admission.replace_validating_webhook_configuration(name, configuration)

    def serve(self, served: Webhook) -> None:
        self.kube_api.webhooks.route_service("gpudra-system", "gpudra-admission", f"127.0.0.1:{served.port}")

    async def refused(self, obj: Obj) -> Obj:
        with pytest.raises(ApiException) as raised:
            await self.create(obj)
        return status_of(raised.value)

    async def create(self, obj: Obj) -> Any:
        namespace = obj["metadata"].get("namespace", "default")
        if obj["kind"] == "ResourceClaim":
            return await self.resource.create_namespaced_resource_claim(namespace, obj)
        if obj["kind"] == "ResourceClaimTemplate":
            return await self.resource.create_namespaced_resource_claim_template(namespace, obj)
        return await self.resource.create_device_class(obj)


@pytest_asyncio.fixture
async def cluster(kube_api: KubeApiServer, tmp_path: Path) -> AsyncIterator[Cluster]:
    kube_api.version = "v1.36.0"
    async with kube_api.api_client() as client:
        state = Cluster(kube_api, client, Authority.issue(tmp_path))
        await state.configure()
        yield state


async def test_a_claim_with_a_bad_config_is_refused_over_http_naming_the_claim_and_the_field(cluster: Cluster) -> None:
    async with webhook(cluster.authority) as served:
        cluster.serve(served)
        status = await cluster.refused(resource_claim("train-0", GOOD, BAD, namespace="ml"))
    assert (status["code"], status["reason"]) == (422, "Invalid")
    assert status["message"] == (
        f'admission webhook "{WEBHOOK}" denied the request: ResourceClaim ml/train-0: '
        "spec.devices.config[1].opaque.parameters: GpuConfig: unknown field sharing.mpsConfg"
    )
    assert [cause["field"] for cause in status["details"]["causes"]] == ["spec.devices.config[1].opaque.parameters"]
    assert cluster.kube_api.store.get("resourceclaims", "train-0", "ml") is None
    (sent,) = cluster.kube_api.webhooks.reviews
    assert sent["request"]["resource"] == {"group": "resource.k8s.io", "version": "v1", "resource": "resourceclaims"}


async def test_a_claim_whose_config_decodes_is_stored(cluster: Cluster) -> None:
    async with webhook(cluster.authority) as served:
        cluster.serve(served)
        created = await cluster.create(resource_claim("train-1", GOOD))
    assert created.metadata.name == "train-1"
    assert cluster.kube_api.store.get("resourceclaims", "train-1") is not None
    assert len(cluster.kube_api.webhooks.reviews) == 1


async def test_templates_and_device_classes_are_checked_too(cluster: Cluster) -> None:
    async with webhook(cluster.authority) as served:
        cluster.serve(served)
        template = await cluster.refused(claim_template("train", BAD))
        device = await cluster.refused(device_class("shared.gpudra.io", BAD))
        await cluster.create(claim_template("train", GOOD))
        for obj in by_kind(build(BASE), "DeviceClass"):  # the deployment's own classes pass
            await cluster.create(obj)
    assert "ResourceClaimTemplate default/train: spec.spec.devices.config[0].opaque.parameters" in template["message"]
    assert "DeviceClass shared.gpudra.io: spec.config[0].opaque.parameters" in device["message"]


async def test_channel_claims_are_checked_and_the_controllers_own_template_passes(cluster: Cluster) -> None:
    """A hand-written channel claim whose config the node would refuse at prepare is refused when written."""
    domain = {
        "apiVersion": "resource.gpudra.io/v1beta1",
        "kind": "ComputeDomain",
        "metadata": {"name": "train", "namespace": "ml", "uid": "cd-uid-1"},
        "spec": {"numNodes": 2, "channel": {"resourceClaimTemplate": {"name": "train-channel"}}},
    }
    async with webhook(cluster.authority) as served:
        cluster.serve(served)
        status = await cluster.refused(resource_claim("imex-0", opaque(channel_config(domainID=""), driver=CD_DRIVER)))
        await cluster.create(workload_claim_template(decode_domain(domain)))
        await cluster.create(resource_claim("imex-1", opaque(channel_config(), driver=CD_DRIVER)))
    assert status["message"].endswith(
        "ResourceClaim default/imex-0: spec.devices.config[0].opaque.parameters: "
        "ComputeDomainChannelConfig: domainID: Expected `str` of length >= 1"
    )
    assert cluster.kube_api.store.get("resourceclaimtemplates", "train-channel", "ml") is not None


def by_kind(objects: list[Obj], kind: str) -> list[Obj]:
    return [obj for obj in objects if obj["kind"] == kind]


async def test_an_update_that_does_not_touch_the_config_is_admitted(cluster: Cluster) -> None:
    """A claim stored while the webhook was down (the deployed failurePolicy admits it) still gets the finalizer
    the scheduler adds, through the webhook."""
    await cluster.create(resource_claim("early", BAD))
    async with webhook(cluster.authority) as served:
        cluster.serve(served)
        patch = {"metadata": {"finalizers": ["resource.kubernetes.io/delete-protection"]}}
        await cluster.resource.patch_namespaced_resource_claim("early", "default", patch)
    assert cluster.kube_api.webhooks.reviews[-1]["request"]["operation"] == "UPDATE"
    stored = cluster.kube_api.store.get("resourceclaims", "early")
    assert stored is not None
    assert stored["metadata"]["finalizers"] == ["resource.kubernetes.io/delete-protection"]


async def test_when_the_webhook_is_down_the_deployed_policy_admits(cluster: Cluster) -> None:
    """failurePolicy Ignore: the write goes through, and prepare still refuses the config (same structs)."""
    async with webhook(cluster.authority) as served:
        cluster.serve(served)
    await cluster.create(resource_claim("while-down", BAD))
    assert cluster.kube_api.store.get("resourceclaims", "while-down") is not None
    assert len(cluster.kube_api.webhooks.reviews) == 1, "it was asked"


async def test_with_failure_policy_fail_a_webhook_that_is_down_refuses_every_claim(cluster: Cluster) -> None:
    await cluster.configure(failurePolicy="Fail")
    async with webhook(cluster.authority) as served:
        cluster.serve(served)
    with pytest.raises(ApiException) as raised:
        await cluster.create(resource_claim("while-down", GOOD))
    status = status_of(raised.value)
    assert (raised.value.status, status["reason"]) == (500, "InternalError")
    assert status["message"].startswith(f'Internal error occurred: failed calling webhook "{WEBHOOK}": ')
    assert cluster.kube_api.store.get("resourceclaims", "while-down") is None


async def test_a_certificate_for_another_name_is_not_trusted(cluster: Cluster, tmp_path: Path) -> None:
    """kube-apiserver checks the certificate against gpudra-admission.gpudra-system.svc, not the pod's address."""
    await cluster.configure(failurePolicy="Fail")
    cluster.authority.renew("127.0.0.1")
    async with webhook(cluster.authority) as served:
        cluster.serve(served)
        with pytest.raises(ApiException) as raised:
            await cluster.create(resource_claim("c", GOOD))
    assert "failed calling webhook" in status_of(raised.value)["message"]
