"""The layout's rules, read from the code itself: services talk over NATS, not through each other's modules;
libs never reach into services; nothing reads outside the repository; the docs name every bucket."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

from libs.bus.topology import BUCKETS

REPO = Path(__file__).resolve().parents[2]
CODE_DIRS = ("services", "libs", "cli", "bench", "protos", "tests")
OUTSIDE = re.compile(r"\.\./shared|[\"']shared/|/ [\"']shared[\"']")
"""A ``shared`` folder one level up, however it is written (a relative path, a quoted ``shared/…``, or the
repository's parent joined with it): the workspace beside a development checkout, which a clone lacks."""


def python_files(top: str) -> Iterator[Path]:
    yield from (path for path in (REPO / top).rglob("*.py") if "__pycache__" not in path.parts)


def imported_modules(path: Path) -> Iterator[str]:
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module


def crossings(top: str, allowed: str | None) -> list[str]:
    """``file: module`` for every import of a service from ``top``, other than the file's own service."""
    found = []
    for path in python_files(top):
        own = path.relative_to(REPO).parts[1] if allowed == "own" else None
        for module in imported_modules(path):
            parts = module.split(".")
            if parts[0] == "services" and (len(parts) < 2 or parts[1] != own):
                found.append(f"{path.relative_to(REPO)}: {module}")
    return found


def test_no_service_imports_another() -> None:
    assert crossings("services", "own") == []


def test_libs_never_import_services() -> None:
    assert crossings("libs", None) == []


def test_the_rule_sees_a_crossing(tmp_path: Path) -> None:
    """The check itself can fail: an import of another service, written as the code would, is found."""
    sample = tmp_path / "sample.py"
    sample.write_text("from services.discovery.slices_sync import taints_key\nimport services.health.settings\n")
    assert list(imported_modules(sample)) == ["services.discovery.slices_sync", "services.health.settings"]


def test_nothing_reads_outside_the_repository() -> None:
    """A clone has no workspace folder beside it; what a test needs is copied in with its source."""
    readers = [
        str(path.relative_to(REPO))
        for top in CODE_DIRS
        for path in python_files(top)
        if path != Path(__file__).resolve() and OUTSIDE.search(path.read_text())
    ]
    assert readers == []


def test_the_architecture_page_names_every_bucket() -> None:
    page = (REPO / "docs" / "architecture.md").read_text()
    assert [spec.bucket for spec in BUCKETS if f"`{spec.bucket}`" not in page] == []
