"""Validating a spec against the CDI project's JSON Schema (``schema.json`` + ``defs.json``).

Used by tests and tools, not on the prepare path: ``jsonschema`` is a development dependency, so it is imported
when a validator is built. The schema checks structure only; ``libs.cdi.writer.spec_problems`` checks what the
schema cannot (names, ``cdiVersion`` against the fields used).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from libs.cdi.errors import CdiError
from libs.cdi.spec import Spec, to_document


class SchemaValidator:
    """Validates documents against the schema files in ``schema_dir`` (no network: refs resolve locally)."""

    def __init__(self, schema_dir: Path | str) -> None:
        import jsonschema
        from referencing import Registry, Resource
        from referencing.jsonschema import DRAFT7

        directory = Path(schema_dir).resolve()
        base = directory.as_uri() + "/"
        documents = {name: json.loads((directory / name).read_text()) for name in ("schema.json", "defs.json")}
        registry: Registry[Any] = Registry().with_resources(
            (base + name, Resource.from_contents(document, default_specification=DRAFT7))
            for name, document in documents.items()
        )
        schema = {"$id": base + "schema.json", **documents["schema.json"]}
        jsonschema.Draft7Validator.check_schema(schema)
        self._validator = jsonschema.Draft7Validator(schema, registry=registry)

    def problems(self, document: object) -> list[str]:
        """Every schema violation, as ``<json path>: <message>``; empty when valid."""
        return [
            f"{error.json_path}: {error.message}"
            for error in sorted(self._validator.iter_errors(document), key=lambda e: e.json_path)
        ]

    def check(self, spec: Spec | object) -> None:
        """Raise ``CdiError`` naming every violation."""
        document = to_document(spec) if isinstance(spec, Spec) else spec
        problems = self.problems(document)
        if problems:
            raise CdiError("CDI spec does not match the schema: " + "; ".join(problems))
