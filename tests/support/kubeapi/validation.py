"""Schema validation of every object the server accepts, plus the rules in ``rules``.

Built-in kinds use the strict schemas shipped by PyPI ``kubernetes-validate`` (unknown fields
are errors), CRD objects the CRD's own ``openAPIV3Schema``. ``kubernetes_validate.validate``
re-reads the 1.5 MB definitions file on every call (~13 ms) and stops at the first error, so
the schema files are read through it once and the compiled validators are cached here.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable
from typing import Any

from jsonschema import Draft202012Validator, ValidationError
from kubernetes_validate import utils as kv_utils
from referencing import Registry, Resource

from .errors import FieldError, JsonObj, invalid, invalid_object, required
from .resources import ResourceType
from .rules import DEFAULTERS, RULES, validate_metadata

_DEFINITIONS = "https://kubernetes.io/api/_definitions.json"
_OBJECT_META = {"$ref": f"{_DEFINITIONS}#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}
_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def schema_version(version: str) -> str:
    """The newest schema set kubernetes-validate ships that is not newer than ``version``."""
    wanted = tuple(int(p) for p in version.lstrip("v").split(".")[:2])
    known = [v for v in kv_utils.all_versions() if tuple(int(p) for p in v.split(".")[:2]) <= wanted]
    if not known:
        raise ValueError(f"kubernetes-validate has no schemas for Kubernetes {version}")
    return str(known[-1])


@functools.cache
def _registry(version: str) -> Registry[Any]:
    path = f"kubernetes-json-schema/v{version}-local-strict/_definitions.json"
    definitions = Resource.from_contents(kv_utils.schema_contents(path, version))
    return definitions @ Registry()


@functools.cache
def builtin_validator(version: str, api_version: str, kind: str) -> Draft202012Validator:
    """Compiled strict validator of one kind; ``version`` as returned by ``schema_version``."""
    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    path = f"kubernetes-json-schema/v{version}-local-strict/{kind.lower()}-{group_version}.json"
    return Draft202012Validator(kv_utils.schema_contents(path, version), registry=_registry(version))


def openapi_to_jsonschema(schema: Any) -> Any:
    """Structural OpenAPI v3 (as in CRDs) to JSON Schema 2020-12, closing objects like strict decoding."""
    if not isinstance(schema, dict):
        return schema
    out: JsonObj = {}
    for key, value in schema.items():
        if key in ("properties", "patternProperties"):
            out[key] = {name: openapi_to_jsonschema(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties", "not"):
            out[key] = openapi_to_jsonschema(value)
        elif key in ("allOf", "anyOf", "oneOf"):
            out[key] = [openapi_to_jsonschema(sub) for sub in value]
        elif key in ("exclusiveMinimum", "exclusiveMaximum"):
            if value is True:
                out[key] = schema["minimum" if key == "exclusiveMinimum" else "maximum"]
        elif not key.startswith("x-kubernetes-") and key not in ("nullable", "default", "description", "example"):
            out[key] = value
    if schema.get("x-kubernetes-int-or-string"):
        out["type"] = ["integer", "string"]
    if schema.get("nullable") and "type" in out:
        out["type"] = [*([out["type"]] if isinstance(out["type"], str) else out["type"]), "null"]
    open_ended = schema.get("x-kubernetes-preserve-unknown-fields") or schema.get("x-kubernetes-embedded-resource")
    if out.get("type") == "object" and "additionalProperties" not in out and not open_ended:
        out["additionalProperties"] = False
    return out


@functools.lru_cache(maxsize=64)
def _crd_validator(version: str, schema_json: str) -> Draft202012Validator:
    schema = openapi_to_jsonschema(json.loads(schema_json))
    props = schema.setdefault("properties", {})
    props.update(apiVersion={"type": "string"}, kind={"type": "string"}, metadata=_OBJECT_META)
    schema["additionalProperties"] = False
    return Draft202012Validator(schema, registry=_registry(version))


def _path(parts: Iterable[Any]) -> str:
    """Render a JSON path the way field.Path does: ``spec.devices[0].attributes[gpu.example.com/model]``."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _PLAIN_KEY.match(part):
            out += f".{part}" if out else part
        else:
            out += f"[{part}]"
    return out


def _join(path: str, name: str) -> str:
    """``path`` (already rendered, dots and all) and one more key, as field.Path.Child renders it."""
    if not _PLAIN_KEY.match(name):
        return f"{path}[{name}]"
    return f"{path}.{name}" if path else name


def _field_errors(error: ValidationError) -> list[FieldError]:
    path = _path(error.absolute_path)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        known = error.schema.get("properties", {}) if isinstance(error.schema, dict) else {}
        unknown = [k for k in error.instance if k not in known]
        return [FieldError(_join(path, k), "FieldValueInvalid", f'unknown field "{_join(path, k)}"') for k in unknown]
    if error.validator == "required":
        match = re.match(r"^'(.+)' is a required property$", error.message)
        return [required(_join(path, match.group(1)) if match else path)]
    if error.validator == "type":
        return [FieldError(path, "FieldValueTypeInvalid", f"Invalid value: {error.message}")]
    if error.validator == "enum":
        return [FieldError(path, "FieldValueNotSupported", f"Unsupported value: {error.message}")]
    return [invalid(path, json.dumps(error.instance)[:100], error.message)]


class Validator:
    """Validates objects for one Kubernetes version; ``version`` may be changed between requests."""

    def __init__(self, version: str) -> None:
        self.version = version

    @property
    def version(self) -> str:
        return self._version

    @version.setter
    def version(self, value: str) -> None:
        self._schemas = schema_version(value)
        self._version = value

    def schema_errors(self, obj: JsonObj, rt: ResourceType | None = None) -> list[FieldError]:
        """Errors of ``obj`` against its kind's schema (the CRD's when ``rt`` is a custom resource)."""
        if rt is not None and rt.crd_schema is not None:
            validator = _crd_validator(self._schemas, json.dumps(rt.crd_schema, sort_keys=True))
        else:
            validator = builtin_validator(self._schemas, obj["apiVersion"], obj["kind"])
        errors = sorted(validator.iter_errors(obj), key=lambda e: [str(p) for p in e.absolute_path])
        return [fe for error in errors for fe in _field_errors(error)]

    def check(self, rt: ResourceType, obj: JsonObj, old: JsonObj | None = None) -> None:
        """Raise 422 Invalid listing every schema, metadata and kind-specific error of ``obj``."""
        errors = self.schema_errors(obj, rt)
        if not errors:  # the rules below assume the schema's types
            errors = validate_metadata(rt, obj)
            rule = RULES.get((rt.group, rt.kind))
            errors += rule(obj, old) if rule else []
        if errors:
            name = (obj.get("metadata") or {}).get("name") or ""
            raise invalid_object(rt.group, rt.kind, name, errors)


def apply_defaults(rt: ResourceType, obj: JsonObj) -> None:
    """Server-side defaulting for the kinds where clients read the defaulted fields back."""
    defaulter = DEFAULTERS.get((rt.group, rt.kind))
    if defaulter:
        defaulter(obj)
