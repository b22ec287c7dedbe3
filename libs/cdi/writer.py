"""Writing and removing spec files so that a container runtime never reads half of one.

A runtime watches the spec directory and loads ``*.json``/``*.yaml`` as they appear. A spec is written to a hidden
temporary name (``.<name>.json.tmp-…``, which runtimes skip) and renamed over the final name: after a crash
either the old spec or the new one is there, whole. Nothing is fsynced: the spec directory (``/var/run/cdi``) is a
tmpfs on every current distribution, and a spec names devices that a reboot resets anyway (its claim is
prepared again). Specs are checked first (names, ``cdiVersion`` against the fields used), so what lands in the
directory is loadable.
"""

from __future__ import annotations

from pathlib import Path

from libs.cdi.errors import CdiError
from libs.cdi.names import device_name_problem, kind_problem
from libs.cdi.spec import Spec, encode
from libs.cdi.version import KNOWN, covers, minimum_version
from libs.files import remove_file, remove_temporaries, write_atomically

SUFFIX = ".json"
SPEC_MODE = 0o644  # the container runtime (root) reads it; nobody else needs to write it
DIR_MODE = 0o755


def spec_problems(spec: Spec) -> list[str]:
    """What would make a runtime refuse ``spec``; empty when it is loadable."""
    problems = [p for p in [kind_problem(spec.kind)] if p]
    problems += [p for p in (device_name_problem(device.name) for device in spec.devices) if p]
    names = [device.name for device in spec.devices]
    problems += [f"device name {name!r} appears twice" for name in sorted(set(names)) if names.count(name) > 1]
    if spec.cdi_version not in KNOWN:
        problems.append(f"cdiVersion {spec.cdi_version!r} is not one of {', '.join(KNOWN)}")
    elif not covers(spec.cdi_version, spec):
        problems.append(f"cdiVersion {spec.cdi_version} is below {minimum_version(spec)}, which its fields need")
    return problems


class SpecDir:
    """One directory of spec files (``/var/run/cdi``), written atomically."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def file_for(self, name: str) -> Path:
        if not name or "/" in name or name.startswith("."):
            raise CdiError(f"spec name {name!r} is not a plain file name")
        return self.path / f"{name}{SUFFIX}"

    def write(self, name: str, spec: Spec) -> Path:
        """Check ``spec`` and replace ``<name>.json`` with it atomically; returns the file's path."""
        problems = spec_problems(spec)
        if problems:
            raise CdiError(f"CDI spec {name}: {'; '.join(problems)}")
        target = self.file_for(name)
        try:
            write_atomically(target, encode(spec), mode=SPEC_MODE, parent_mode=DIR_MODE, durable=False)
        except OSError as exc:
            raise CdiError(f"CDI spec {target}: cannot write it: {exc}") from exc
        return target

    def remove(self, name: str) -> bool:
        """Delete ``<name>.json``; False when it was not there (removing twice is not an error)."""
        target = self.file_for(name)
        try:
            return remove_file(target, durable=False)
        except OSError as exc:
            raise CdiError(f"CDI spec {target}: cannot remove it: {exc}") from exc

    def names(self, prefix: str = "") -> list[str]:
        """Spec names (without ``.json``) starting with ``prefix``, sorted."""
        if not self.path.is_dir():
            return []
        return sorted(
            entry.name.removesuffix(SUFFIX)
            for entry in self.path.iterdir()
            if entry.name.endswith(SUFFIX) and entry.name.startswith(prefix)
        )

    def remove_temporaries(self) -> int:
        """Delete temporary files left by writes a crash interrupted; call it before any write starts."""
        return remove_temporaries(self.path)
