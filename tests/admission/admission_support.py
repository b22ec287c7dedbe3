"""What the admission tests share: claims with opaque configs, AdmissionReviews as the API server sends them, a
certificate authority, and the webhook running with a certificate it issued."""

from __future__ import annotations

import base64
import ssl
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trustme

from libs.claims.configapi import API_VERSION
from services.admission.service import RELOAD_SECONDS, Webhook, running
from services.admission.settings import Settings

Obj = dict[str, Any]
DRIVER = "gpu.gpudra.io"
CD_DRIVER = "compute-domain.gpudra.io"
SERVICE_NAME = "gpudra-admission.gpudra-system.svc"
"""The name kube-apiserver checks the certificate for, when the configuration names the Service."""


def gpu_config(**fields: Any) -> Obj:
    return {"apiVersion": API_VERSION, "kind": "GpuConfig", **fields}


def mig_config(**fields: Any) -> Obj:
    return {"apiVersion": API_VERSION, "kind": "MigDeviceConfig", **fields}


def channel_config(**fields: Any) -> Obj:
    return {"apiVersion": API_VERSION, "kind": "ComputeDomainChannelConfig", "domainID": "cd-uid-1", **fields}


def opaque(parameters: Any, driver: str = DRIVER, requests: list[str] | None = None) -> Obj:
    entry: Obj = {"opaque": {"driver": driver, "parameters": parameters}}
    if requests is not None:
        entry["requests"] = requests
    return entry


def claim_spec(*configs: Obj) -> Obj:
    devices: Obj = {"requests": [{"name": "gpu", "exactly": {"deviceClassName": "gpu.gpudra.io"}}]}
    if configs:
        devices["config"] = list(configs)
    return {"devices": devices}


def resource_claim(name: str, *configs: Obj, namespace: str = "default") -> Obj:
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": name, "namespace": namespace},
        "spec": claim_spec(*configs),
    }


def claim_template(name: str, *configs: Obj, namespace: str = "default") -> Obj:
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaimTemplate",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"spec": claim_spec(*configs)},
    }


def device_class(name: str, *configs: Obj) -> Obj:
    spec: Obj = {"selectors": [{"cel": {"expression": f'device.driver == "{DRIVER}"'}}]}
    if configs:
        spec["config"] = list(configs)
    return {"apiVersion": "resource.k8s.io/v1", "kind": "DeviceClass", "metadata": {"name": name}, "spec": spec}


PLURALS = {
    "ResourceClaim": "resourceclaims",
    "ResourceClaimTemplate": "resourceclaimtemplates",
    "DeviceClass": "deviceclasses",
}


def review(obj: Obj, operation: str = "CREATE", old: Obj | None = None, sub_resource: str = "") -> Obj:
    """An AdmissionReview v1 as kube-apiserver sends it for ``obj`` (fields the webhook ignores included)."""
    group, _, version = obj["apiVersion"].rpartition("/")
    meta = obj["metadata"]
    request: Obj = {
        "uid": str(uuid.uuid4()),
        "kind": {"group": group, "version": version, "kind": obj["kind"]},
        "resource": {"group": group, "version": version, "resource": PLURALS.get(obj["kind"], obj["kind"].lower())},
        "requestKind": {"group": group, "version": version, "kind": obj["kind"]},
        "name": meta.get("name", ""),
        "operation": operation,
        "userInfo": {"username": "alice", "groups": ["system:authenticated"]},
        "object": None if operation == "DELETE" else obj,
        "oldObject": old,
        "dryRun": False,
        "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
    }
    if "namespace" in meta:
        request["namespace"] = meta["namespace"]
    if sub_resource:
        request["subResource"] = sub_resource
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}


@dataclass(frozen=True)
class Authority:
    """A CA and the webhook's certificate files it issued (for 127.0.0.1 and the Service's name)."""

    ca: trustme.CA
    cert_file: Path
    key_file: Path

    @classmethod
    def issue(cls, directory: Path) -> Authority:
        ca = trustme.CA()
        authority = cls(ca, directory / "tls.crt", directory / "tls.key")
        authority.renew()
        return authority

    def renew(self, *names: str) -> trustme.LeafCert:
        """Write a new certificate and key over the files (as the kubelet updates a Secret's)."""
        leaf = self.ca.issue_cert(*(names or ("127.0.0.1", SERVICE_NAME)))
        self.cert_file.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
        self.key_file.write_bytes(leaf.private_key_pem.bytes())
        return leaf

    def client_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        return context

    @property
    def ca_bundle(self) -> str:
        """``caBundle`` of a webhook configuration: the CA's PEM, base64."""
        return base64.b64encode(self.ca.cert_pem.bytes()).decode()


def webhook_settings(authority: Authority, **fields: Any) -> Settings:
    return Settings(
        webhook_port=0,
        metrics_port=-1,
        tls_cert_file=str(authority.cert_file),
        tls_key_file=str(authority.key_file),
        **fields,
    )


@asynccontextmanager
async def webhook(authority: Authority, *, reload_seconds: float = RELOAD_SECONDS) -> AsyncIterator[Webhook]:
    """The webhook as its Deployment runs it, on a free port of 127.0.0.1."""
    async with running(webhook_settings(authority), reload_seconds=reload_seconds) as served:
        yield served
