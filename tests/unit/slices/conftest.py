"""The slice tests validate many objects against one schema set: kubernetes-validate re-reads its 1.5 MB schema on
every call, and the schema does not change within a module."""

from __future__ import annotations

import functools
from collections.abc import Iterator

import pytest
from kubernetes_validate import utils


@pytest.fixture(scope="module", autouse=True)
def cached_schemas() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(utils, "schema_contents", functools.lru_cache(maxsize=None)(utils.schema_contents))
        yield
