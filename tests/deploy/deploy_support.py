"""What the deploy tests share: the repository root and every service's settings struct."""

from __future__ import annotations

import importlib
from functools import cache
from pathlib import Path

from libs.settings import CommonSettings

ROOT = Path(__file__).resolve().parents[2]


@cache
def service_settings() -> dict[str, type[CommonSettings]]:
    """``services.<name>.settings.Settings`` for every service folder."""
    found: dict[str, type[CommonSettings]] = {}
    for path in sorted((ROOT / "services").glob("*/settings.py")):
        module = importlib.import_module(f"services.{path.parent.name}.settings")
        found[path.parent.name] = module.Settings
    return found
