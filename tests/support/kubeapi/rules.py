"""Validation the OpenAPI schemas cannot express, ported from kube-apiserver's Go validation.

The published schemas carry no lengths, formats or cross-field rules, yet those are what
reject real objects (a 65-byte attribute string, an upper-case device name, a changed claim
spec). Only the rules for the kinds this project writes are here; each names its Go source.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from libs.claims.configapi.quantity import parse_quantity

from .errors import FieldError, JsonObj, duplicate, forbidden, invalid, required, too_long, too_many
from .resources import ResourceType

_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_SUBDOMAIN_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_NAME_PART_RE = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_C_IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_QUANTITY_RE = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([KMGTPE]i|[numkMGTPE]|[eE][+-]?\d+)?$")
_UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_SEMVER_RE = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)
LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start "
    "and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is "
    "'[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)
SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must "
    "start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is "
    r"'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
_NAME_PART_MSG = (
    "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric "
    "character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is "
    "'([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
)
_C_IDENT_MSG = (
    "a valid C identifier must start with alphabetic character or '_', followed by a string of alphanumeric "
    "characters or '_' (e.g. 'my_name',  or 'MY_NAME',  or 'MyName', regex used for validation is "
    "'[A-Za-z_][A-Za-z0-9_]*')"
)

Errors = list[FieldError]


def label_problems(value: str) -> list[str]:
    """IsDNS1123Label: why ``value`` is not a DNS label (empty when it is one)."""
    too_long_msg = ["must be no more than 63 characters"] if len(value) > 63 else []
    return too_long_msg + ([] if _LABEL_RE.match(value) else [LABEL_MSG])


def subdomain_problems(value: str) -> list[str]:
    """IsDNS1123Subdomain: why ``value`` is not a DNS subdomain (empty when it is one)."""
    too_long_msg = ["must be no more than 253 characters"] if len(value) > 253 else []
    return too_long_msg + ([] if _SUBDOMAIN_RE.match(value) else [SUBDOMAIN_MSG])


def dns_label(value: str, path: str) -> Errors:
    return [invalid(path, value, msg) for msg in label_problems(value)]


def dns_subdomain(value: str, path: str) -> Errors:
    return [invalid(path, value, msg) for msg in subdomain_problems(value)]


def qualified_name(value: str, path: str) -> Errors:
    """IsQualifiedName (label and annotation keys, finalizers): ``[dns-subdomain/]name``."""
    prefix, slash, name = value.rpartition("/")
    if value.count("/") > 1 or (slash and not prefix):
        return [invalid(path, value, "a qualified name " + _NAME_PART_MSG)]
    errs = [invalid(path, value, "prefix part " + msg) for msg in subdomain_problems(prefix)] if prefix else []
    if len(name) > 63:
        errs.append(invalid(path, value, "name part must be no more than 63 characters"))
    if not _NAME_PART_RE.match(name):
        errs.append(invalid(path, value, "name part " + _NAME_PART_MSG))
    return errs


def _label_value(value: str, path: str) -> Errors:
    if len(value) > 63:
        return [invalid(path, value, "must be no more than 63 characters")]
    if value and not _NAME_PART_RE.match(value):
        return [invalid(path, value, "a valid label must be an empty string or " + _NAME_PART_MSG[5:])]
    return []


def _key(path: str, key: str) -> str:
    return f"{path}[{key}]"


def _name(rt: ResourceType, obj: JsonObj, name: str) -> Errors:
    if not name:
        return [required("metadata.name", "name or generateName is required")]
    if rt.plural == "customresourcedefinitions":
        spec = obj.get("spec") or {}
        expected = f"{(spec.get('names') or {}).get('plural')}.{spec.get('group')}"
        return [] if name == expected else [invalid("metadata.name", name, 'must be spec.names.plural+"."+spec.group')]
    return (dns_label if rt.name_is_label else dns_subdomain)(name, "metadata.name")


def _labels_and_annotations(meta: JsonObj) -> Errors:
    errs: Errors = []
    for key, value in (meta.get("labels") or {}).items():
        errs += qualified_name(key, "metadata.labels") + _label_value(value, _key("metadata.labels", key))
    for key in meta.get("annotations") or {}:
        errs += qualified_name(key.lower(), "metadata.annotations")
    return errs


def _finalizers_and_owners(meta: JsonObj) -> Errors:
    errs: Errors = []
    finalizers = meta.get("finalizers") or []
    for i, finalizer in enumerate(finalizers):
        errs += qualified_name(finalizer, f"metadata.finalizers[{i}]")
        errs += [duplicate(f"metadata.finalizers[{i}]", finalizer)] if finalizer in finalizers[:i] else []
    controllers = [o for o in meta.get("ownerReferences") or [] if o.get("controller")]
    if len(controllers) > 1:
        detail = "Only one reference can have Controller set to true"
        errs.append(invalid("metadata.ownerReferences", len(controllers), detail))
    return errs


def validate_metadata(rt: ResourceType, obj: JsonObj) -> Errors:
    """ValidateObjectMeta: name and namespace formats, labels, annotations, finalizers, owners."""
    meta = obj.get("metadata") or {}
    errs = _name(rt, obj, meta.get("name") or "")
    if rt.namespaced:
        errs += dns_label(meta.get("namespace") or "", "metadata.namespace")
    return errs + _labels_and_annotations(meta) + _finalizers_and_owners(meta)


def _immutable(new: Any, old: Any, path: str) -> Errors:
    return [] if new == old else [invalid(path, json.dumps(new, sort_keys=True)[:200], "field is immutable")]


# --- resource.k8s.io/v1 ResourceSlice (pkg/apis/resource/validation: validateResourceSliceSpec) -----------


def _driver_name(value: str, path: str) -> Errors:
    if not value:
        return [required(path)]
    errs = [too_long(path, 63)] if len(value) > 63 else []
    return errs + [invalid(path, value, msg) for msg in subdomain_problems(value.lower())]


def _device_key(key: str, path: str) -> Errors:
    """validateQualifiedName: a C identifier of at most 32 bytes, optionally behind a driver-name domain."""
    domain, slash, ident = key.rpartition("/")
    errs = [too_long(path, 96)] if len(key) > 96 else []
    if key.count("/") > 1:
        return [*errs, invalid(path, key, "must not contain more than one slash")]
    if slash:
        errs += [invalid(path, "", "the domain must not be empty")] if not domain else _driver_name(domain, path)
    if len(ident) > 32:
        errs.append(too_long(path, 32))
    return errs + ([] if _C_IDENT_RE.match(ident) else [invalid(path, ident, _C_IDENT_MSG)])


def _attribute(attr: JsonObj, path: str) -> Errors:
    values = [k for k in ("bool", "int", "string", "version") if attr.get(k) is not None]
    errs = [] if len(values) == 1 else [invalid(path, "", "exactly one value must be specified")]
    for field in ("string", "version"):
        value = attr.get(field)
        if isinstance(value, str) and len(value.encode()) > 64:
            errs.append(too_long(f"{path}.{field}", 64))
    version = attr.get("version")
    if isinstance(version, str) and not _SEMVER_RE.match(version):
        errs.append(invalid(f"{path}.version", version, "must be a string compatible with semver.org spec 2.0.0"))
    return errs


def _capacity(capacity: JsonObj, path: str, *, shareable: bool) -> Errors:
    errs: Errors = []
    for key, cap in capacity.items():
        errs += _device_key(key, _key(path, key))
        value = str((cap or {}).get("value", ""))
        if not _QUANTITY_RE.match(value):
            errs.append(invalid(_key(path, key) + ".value", value, "quantities must match the regular expression"))
        elif (cap or {}).get("requestPolicy") is not None:
            policy_path = _key(path, key) + ".requestPolicy"
            if not shareable:
                errs.append(forbidden(policy_path, "allowMultipleAllocations must be true"))
            errs += _request_policy(cap["requestPolicy"], parse_quantity(value), policy_path)
    return errs


def _request_policy(policy: JsonObj, value: int, path: str) -> Errors:
    """validateRequestPolicy (KEP-5075): one of validValues and validRange, with a default that either allows."""
    values, bounds = policy.get("validValues"), policy.get("validRange")
    if values and bounds:
        return [forbidden(path, "exactly one of validValues or validRange may be set")]
    if (values or bounds) and policy.get("default") is None:
        return [required(f"{path}.default", "required when validValues or validRange is set")]
    default = parse_quantity(policy["default"]) if policy.get("default") is not None else None
    if values:
        return _valid_values([parse_quantity(v) for v in values], default, value, path)
    if bounds:
        return _valid_range(bounds, default, value, f"{path}.validRange")
    return []


def _valid_values(values: list[int], default: int | None, value: int, path: str) -> Errors:
    errs = [too_many(f"{path}.validValues", len(values), 10)] if len(values) > 10 else []
    if any(later <= earlier for earlier, later in itertools.pairwise(values)):
        errs.append(invalid(f"{path}.validValues", values, "must be sorted in ascending order and unique"))
    errs += [
        invalid(f"{path}.validValues", v, "must be less than or equal to the capacity value")
        for v in values
        if v > value
    ]
    if default not in values:
        errs.append(invalid(f"{path}.default", default, "must be one of the validValues"))
    return errs


def _valid_range(bounds: JsonObj, default: int | None, value: int, path: str) -> Errors:
    low = parse_quantity(bounds["min"])
    high = parse_quantity(bounds["max"]) if bounds.get("max") is not None else None
    step = parse_quantity(bounds["step"]) if bounds.get("step") is not None else None
    errs = [invalid(f"{path}.min", low, "must be less than or equal to the capacity value")] if low > value else []
    if high is not None and (high > value or high < low):
        errs.append(invalid(f"{path}.max", high, "must be between min and the capacity value"))
    if default is not None and (default < low or (high is not None and default > high)):
        errs.append(invalid(f"{path}.default", default, "must be within the valid range"))
    if step is not None:
        if low + step > value:
            errs.append(invalid(f"{path}.step", step, "min + step must be less than or equal to the capacity value"))
        for name, amount in (("default", default), ("max", high)):
            if amount is not None and step and (amount - low) % step:
                errs.append(invalid(f"{path}.{name}", amount, "must be min plus a multiple of step"))
    return errs


def _device(device: JsonObj, path: str) -> Errors:
    errs = dns_label(device.get("name") or "", f"{path}.name")
    attributes, capacity = device.get("attributes") or {}, device.get("capacity") or {}
    if len(attributes) + len(capacity) > 32:
        detail = "the total number of attributes and capacities must not exceed 32"
        errs.append(invalid(path, len(attributes) + len(capacity), detail))
    for key, attr in attributes.items():
        errs += _device_key(key, _key(f"{path}.attributes", key)) + _attribute(attr, _key(f"{path}.attributes", key))
    return errs + _capacity(capacity, f"{path}.capacity", shareable=bool(device.get("allowMultipleAllocations")))


def _node_selection(spec: JsonObj) -> Errors:
    chosen = [f"`{f}`" for f in ("nodeName", "nodeSelector", "allNodes", "perDeviceNodeSelection") if spec.get(f)]
    errs = dns_subdomain(spec["nodeName"], "spec.nodeName") if spec.get("nodeName") else []
    terms = (spec.get("nodeSelector") or {}).get("nodeSelectorTerms")
    if spec.get("nodeSelector") and len(terms or []) != 1:
        errs.append(
            invalid("spec.nodeSelector.nodeSelectorTerms", len(terms or []), "must have exactly one node selector term")
        )
    what = "exactly one of `nodeName`, `nodeSelector`, `allNodes`, `perDeviceNodeSelection` is required"
    if not chosen:
        errs.append(required("spec", what))
    elif len(chosen) > 1:
        errs.append(invalid("spec", "{" + ", ".join(chosen) + "}", what + ", but multiple fields are set"))
    return errs


def _pool(pool: JsonObj) -> Errors:
    name = pool.get("name") or ""
    errs = [required("spec.pool.name")] if not name else []
    errs += [too_long("spec.pool.name", 253)] if len(name) > 253 else []
    for part in name.split("/") if name else []:
        errs += dns_subdomain(part, "spec.pool.name")
    if (pool.get("resourceSliceCount") or 0) <= 0:
        errs.append(
            invalid("spec.pool.resourceSliceCount", pool.get("resourceSliceCount", 0), "must be greater than zero")
        )
    if (pool.get("generation") or 0) < 0:
        errs.append(invalid("spec.pool.generation", pool["generation"], "must be greater than or equal to zero"))
    return errs


def resource_slice(obj: JsonObj, old: JsonObj | None) -> Errors:
    spec = obj.get("spec") or {}
    errs = _driver_name(spec.get("driver") or "", "spec.driver") + _pool(spec.get("pool") or {}) + _node_selection(spec)
    devices = spec.get("devices") or []
    if len(devices) > 128:
        errs.append(too_many("spec.devices", len(devices), 128))
    names: set[str] = set()
    for i, device in enumerate(devices):
        errs += _device(device, f"spec.devices[{i}]")
        if device.get("name") in names:
            errs.append(duplicate(f"spec.devices[{i}].name", device["name"]))
        names.add(device.get("name") or "")
    if old is not None:
        for field in ("driver", "nodeName"):
            errs += _immutable(spec.get(field), (old.get("spec") or {}).get(field), f"spec.{field}")
    return errs


# --- resource.k8s.io/v1 ResourceClaim ------------------------------------------------------------------


def _exact_request(request: JsonObj, path: str) -> Errors:
    errs = dns_subdomain(request.get("deviceClassName") or "", f"{path}.deviceClassName")
    mode, count = request.get("allocationMode"), request.get("count")
    if mode == "All" and count:
        errs.append(invalid(f"{path}.count", count, "must not be specified when allocationMode is 'All'"))
    elif mode == "ExactCount" and (count or 0) <= 0:
        errs.append(invalid(f"{path}.count", count or 0, "must be greater than zero"))
    elif mode not in ("All", "ExactCount"):
        errs.append(
            FieldError(f"{path}.allocationMode", "FieldValueNotSupported", f"Unsupported value: {json.dumps(mode)}")
        )
    return errs


def _claim_requests(requests: list[JsonObj]) -> Errors:
    errs: Errors = []
    names: set[str] = set()
    for i, request in enumerate(requests):
        path, name = f"spec.devices.requests[{i}]", request.get("name") or ""
        errs += dns_label(name, f"{path}.name") + ([duplicate(f"{path}.name", name)] if name in names else [])
        names.add(name)
        if bool(request.get("exactly")) == bool(request.get("firstAvailable")):
            errs.append(required(path, "exactly one of `exactly` or `firstAvailable` is required"))
        elif request.get("exactly"):
            errs += _exact_request(request["exactly"], f"{path}.exactly")
    return errs


def resource_claim(obj: JsonObj, old: JsonObj | None) -> Errors:
    """Requests are unique DNS labels with one of exactly/firstAvailable; the spec is immutable."""
    if old is None:
        return _claim_requests(((obj.get("spec") or {}).get("devices") or {}).get("requests") or [])
    errs = _immutable(obj.get("spec"), old.get("spec"), "spec")
    return errs + _claim_status(obj.get("status") or {}, old.get("status") or {})


def _claim_status(status: JsonObj, old_status: JsonObj) -> Errors:
    """An allocation is immutable once set; reservations need an allocation."""
    errs: Errors = []
    if old_status.get("allocation") and status.get("allocation"):
        errs += _immutable(status["allocation"], old_status["allocation"], "status.allocation")
    if status.get("reservedFor") and not status.get("allocation"):
        errs.append(forbidden("status.reservedFor", "may not be specified when `allocated` is not set"))
    if len(status.get("reservedFor") or []) > 256:
        errs.append(too_many("status.reservedFor", len(status["reservedFor"]), 256))
    results = ((status.get("allocation") or {}).get("devices") or {}).get("results") or []
    for i, result in enumerate(results):
        share = result.get("shareID")
        if share is not None and not _UUID_RE.match(str(share)):
            path = f"status.allocation.devices.results[{i}].shareID"
            errs.append(invalid(path, share, "must be a valid UUID"))
    return errs


def default_resource_claim(obj: JsonObj) -> None:
    """SetDefaults_ExactDeviceRequest: allocationMode ExactCount with count 1."""
    for request in ((obj.get("spec") or {}).get("devices") or {}).get("requests") or []:
        for exact in [request.get("exactly"), *(request.get("firstAvailable") or [])]:
            if isinstance(exact, dict):
                exact.setdefault("allocationMode", "ExactCount")
                if exact["allocationMode"] == "ExactCount":
                    exact.setdefault("count", 1)


# --- other kinds ----------------------------------------------------------------------------------------


def lease(obj: JsonObj, old: JsonObj | None) -> Errors:
    spec = obj.get("spec") or {}
    errs = []
    if spec.get("leaseDurationSeconds") is not None and spec["leaseDurationSeconds"] <= 0:
        errs.append(invalid("spec.leaseDurationSeconds", spec["leaseDurationSeconds"], "must be greater than 0"))
    if spec.get("leaseTransitions") is not None and spec["leaseTransitions"] < 0:
        errs.append(invalid("spec.leaseTransitions", spec["leaseTransitions"], "must be greater than or equal to 0"))
    return errs


def _mutable_pod_spec(spec: JsonObj) -> JsonObj:
    drop = ("activeDeadlineSeconds", "tolerations", "terminationGracePeriodSeconds", "schedulingGates")
    out = {k: v for k, v in spec.items() if k not in drop}
    for field in ("containers", "initContainers"):
        out[field] = [{k: v for k, v in c.items() if k != "image"} for c in spec.get(field) or []]
    return out


def pod(obj: JsonObj, old: JsonObj | None) -> Errors:
    """ValidatePodUpdate: only images, deadlines, tolerations and scheduling gates may change."""
    if old is None or _mutable_pod_spec(obj.get("spec") or {}) == _mutable_pod_spec(old.get("spec") or {}):
        return []
    detail = (
        "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,"
        "`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),"
        "`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)"
    )
    return [forbidden("spec", detail)]


def custom_resource_definition(obj: JsonObj, old: JsonObj | None) -> Errors:
    versions = (obj.get("spec") or {}).get("versions") or []
    if sum(1 for v in versions if v.get("storage")) != 1:
        return [invalid("spec.versions", len(versions), "must have exactly one version marked as storage version")]
    return []


# --- admissionregistration.k8s.io/v1 ValidatingWebhookConfiguration --------------------------------------


def _not_supported(path: str, value: Any, supported: list[str]) -> FieldError:
    shown = ", ".join(json.dumps(v) for v in supported)
    return FieldError(
        path, "FieldValueNotSupported", f"Unsupported value: {json.dumps(value)}: supported values: {shown}"
    )


def _webhook_url(url: str, path: str) -> Errors:
    """ValidateWebhookURL with forceHttps: an absolute https URL without user info, query or fragment."""
    parts = urlsplit(url)
    errs: Errors = []
    if parts.scheme != "https":
        errs.append(invalid(path, parts.scheme, "'https' is the only allowed URL scheme"))
    if not parts.hostname:
        errs.append(invalid(path, url, "host must be specified"))
    if parts.username or parts.password:
        errs.append(invalid(path, parts.username, "user information is not permitted in the URL"))
    if parts.fragment or parts.query:
        errs.append(invalid(path, url, "fragments and query parameters are not permitted"))
    return errs


def _client_config(client: JsonObj, path: str) -> Errors:
    if bool(client.get("url")) == bool(client.get("service")):
        return [required(path, "exactly one of url or service is required")]
    if client.get("url"):
        return _webhook_url(client["url"], f"{path}.url")
    service, errs = client["service"], []
    for field in ("namespace", "name"):
        if not service.get(field):
            errs.append(required(f"{path}.service.{field}", f"service {field} is required"))
    service_path = service.get("path")
    if service_path is not None and not service_path.startswith("/"):
        errs.append(invalid(f"{path}.service.path", service_path, "must start with a '/'"))
    if not 1 <= service.get("port", 443) <= 65535:
        errs.append(
            invalid(f"{path}.service.port", service.get("port"), "port is not valid: must be between 1 and 65535")
        )
    return errs


def _webhook_rule(rule: JsonObj, path: str) -> Errors:
    errs: Errors = []
    for field in ("operations", "apiGroups", "apiVersions", "resources"):
        if not rule.get(field):
            errs.append(required(f"{path}.{field}"))
    for j, operation in enumerate(rule.get("operations") or []):
        if operation not in ("*", "CREATE", "UPDATE", "DELETE", "CONNECT"):
            errs.append(
                _not_supported(f"{path}.operations[{j}]", operation, ["*", "CONNECT", "CREATE", "DELETE", "UPDATE"])
            )
    if rule.get("scope", "*") not in ("*", "Cluster", "Namespaced"):
        errs.append(_not_supported(f"{path}.scope", rule["scope"], ["*", "Cluster", "Namespaced"]))
    return errs


def _validating_webhook(hook: JsonObj, path: str) -> Errors:
    """validateValidatingWebhook for v1 (sideEffects and admissionReviewVersions required)."""
    name = hook.get("name") or ""
    errs = dns_subdomain(name, f"{path}.name") if name else [required(f"{path}.name")]
    if name and len(name.split(".")) < 3:
        errs.append(invalid(f"{path}.name", name, "should be a domain with at least three segments separated by dots"))
    for j, rule in enumerate(hook.get("rules") or []):
        errs += _webhook_rule(rule, f"{path}.rules[{j}]")
    if hook.get("failurePolicy", "Fail") not in ("Fail", "Ignore"):
        errs.append(_not_supported(f"{path}.failurePolicy", hook["failurePolicy"], ["Fail", "Ignore"]))
    if hook.get("matchPolicy", "Equivalent") not in ("Equivalent", "Exact"):
        errs.append(_not_supported(f"{path}.matchPolicy", hook["matchPolicy"], ["Equivalent", "Exact"]))
    if "sideEffects" not in hook:
        errs.append(required(f"{path}.sideEffects", "must specify one of None, NoneOnDryRun"))
    elif hook["sideEffects"] not in ("None", "NoneOnDryRun"):
        errs.append(_not_supported(f"{path}.sideEffects", hook["sideEffects"], ["None", "NoneOnDryRun"]))
    versions = hook.get("admissionReviewVersions") or []
    if not versions:
        errs.append(required(f"{path}.admissionReviewVersions", "must specify one of v1, v1beta1"))
    elif not {"v1", "v1beta1"} & set(versions):
        errs.append(invalid(f"{path}.admissionReviewVersions", versions, "must include at least one of v1, v1beta1"))
    timeout = hook.get("timeoutSeconds", 10)
    if not 1 <= timeout <= 30:
        errs.append(invalid(f"{path}.timeoutSeconds", timeout, "the timeout value must be between 1 and 30 seconds"))
    return errs + _client_config(hook.get("clientConfig") or {}, f"{path}.clientConfig")


def validating_webhook_configuration(obj: JsonObj, old: JsonObj | None) -> Errors:
    errs: Errors = []
    names: set[str] = set()
    for i, hook in enumerate(obj.get("webhooks") or []):
        errs += _validating_webhook(hook, f"webhooks[{i}]")
        if hook.get("name") in names:
            errs.append(duplicate(f"webhooks[{i}].name", hook["name"]))
        names.add(hook.get("name") or "")
    return errs


def default_validating_webhook_configuration(obj: JsonObj) -> None:
    """SetDefaults_ValidatingWebhook, SetDefaults_Rule, SetDefaults_ServiceReference."""
    for hook in obj.get("webhooks") or []:
        hook.setdefault("failurePolicy", "Fail")
        hook.setdefault("matchPolicy", "Equivalent")
        hook.setdefault("namespaceSelector", {})
        hook.setdefault("objectSelector", {})
        hook.setdefault("timeoutSeconds", 10)
        for rule in hook.get("rules") or []:
            rule.setdefault("scope", "*")
        service = (hook.get("clientConfig") or {}).get("service")
        if isinstance(service, dict):
            service.setdefault("port", 443)


Rule = Callable[[JsonObj, JsonObj | None], Errors]

RULES: dict[tuple[str, str], Rule] = {
    ("resource.k8s.io", "ResourceSlice"): resource_slice,
    ("resource.k8s.io", "ResourceClaim"): resource_claim,
    ("coordination.k8s.io", "Lease"): lease,
    ("", "Pod"): pod,
    ("apiextensions.k8s.io", "CustomResourceDefinition"): custom_resource_definition,
    ("admissionregistration.k8s.io", "ValidatingWebhookConfiguration"): validating_webhook_configuration,
}

DEFAULTERS: dict[tuple[str, str], Callable[[JsonObj], None]] = {
    ("resource.k8s.io", "ResourceClaim"): default_resource_claim,
    ("admissionregistration.k8s.io", "ValidatingWebhookConfiguration"): default_validating_webhook_configuration,
}
