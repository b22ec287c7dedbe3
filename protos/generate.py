"""Regenerate (or check) the Python code for the kubelet-facing .proto files.

    python -m protos.generate            rewrite protos/gen/ from protos/proto/*.proto
    python -m protos.generate --check    exit 1 and name the stale files if protos/gen/ differs

The hand-written sources live in ``protos/proto/``; protoc sees them under the virtual path
``protos/gen/`` (``-Iprotos/gen=protos/proto``). That is what makes the generated
``*_pb2_grpc.py`` say ``from protos.gen import x_pb2``: protoc derives Python imports from the
.proto path relative to the include root, so the virtual path must mirror the Python package.

Besides ``*_pb2.py`` and ``*_pb2_grpc.py`` we generate ``.pyi`` stubs with mypy-protobuf
(``protoc-gen-mypy`` and ``protoc-gen-mypy_grpc``) so that code using the messages and stubs
type-checks under ``mypy --strict``.

Generated code is committed, and ``--check`` (run by a test) keeps it in step with the sources.
Lines that only stamp the generator's version (protobuf runtime check, ``GRPC_GENERATED_VERSION``)
are ignored by the comparison, so a patch release of grpcio-tools does not fail CI on its own;
any real change in the generated code still does.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent
PROTO_DIR = PACKAGE_DIR / "proto"
GEN_DIR = PACKAGE_DIR / "gen"
# The path the .proto files have for protoc; it decides the generated import lines.
VIRTUAL_PREFIX = "protos/gen"

GEN_INIT = '''"""Generated protobuf/gRPC modules for the kubelet APIs.

Do not edit: change protos/proto/*.proto and run `python -m protos.generate`.

Modules (each with .pyi stubs):
{modules}
"""
'''

# Version stamps that differ between generator releases without any change in behaviour.
_VERSION_STAMPS = (
    re.compile(r"^# Protobuf Python Version: .*$", re.MULTILINE),
    re.compile(r"ValidateProtobufRuntimeVersion\(\s*[^)]*\)", re.MULTILINE),
    re.compile(r"^GRPC_GENERATED_VERSION = .*$", re.MULTILINE),
)


class GenerateError(RuntimeError):
    """protoc or one of its plugins is missing or failed."""


def proto_sources() -> list[Path]:
    """The hand-written .proto files, sorted so that generation order is stable."""
    return sorted(PROTO_DIR.glob("*.proto"))


def _plugin(name: str) -> Path:
    """Find a protoc plugin executable: next to this interpreter first (the venv), then on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return beside
    found = shutil.which(name)
    if found is None:
        raise GenerateError(f"{name} not found: install mypy-protobuf (pip install mypy-protobuf)")
    return Path(found)


def generate_into(out_root: Path) -> dict[str, bytes]:
    """Run protoc into ``out_root`` and return {file name inside protos/gen: content}."""
    spec = importlib.util.find_spec("grpc_tools")
    if spec is None or spec.origin is None:
        raise GenerateError("grpcio-tools is not installed (pip install grpcio-tools)")
    well_known = Path(spec.origin).resolve().parent / "_proto"
    sources = proto_sources()
    if not sources:
        raise GenerateError(f"no .proto files in {PROTO_DIR}")
    args = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{VIRTUAL_PREFIX}={PROTO_DIR}",
        f"-I{well_known}",
        f"--plugin=protoc-gen-mypy={_plugin('protoc-gen-mypy')}",
        f"--plugin=protoc-gen-mypy_grpc={_plugin('protoc-gen-mypy_grpc')}",
        f"--python_out={out_root}",
        f"--grpc_python_out={out_root}",
        f"--mypy_out={out_root}",
        f"--mypy_grpc_out={out_root}",
        *(f"{VIRTUAL_PREFIX}/{src.name}" for src in sources),
    ]
    proc = subprocess.run(args, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise GenerateError(f"protoc failed (exit {proc.returncode}):\n{proc.stderr}{proc.stdout}")
    gen = out_root / VIRTUAL_PREFIX
    files = {p.name: p.read_bytes() for p in sorted(gen.iterdir()) if p.is_file()}
    modules = "\n".join(f"    protos.gen.{name.removesuffix('.py')}" for name in sorted(files) if name.endswith(".py"))
    files["__init__.py"] = GEN_INIT.format(modules=modules).encode()
    files["py.typed"] = b""
    return files


def fresh_generation() -> dict[str, bytes]:
    """Generate into a temporary directory and return the files, leaving the repo untouched."""
    with tempfile.TemporaryDirectory(prefix="gpudra-proto-") as tmp:
        return generate_into(Path(tmp))


def committed_files() -> dict[str, bytes]:
    """The files now in protos/gen (caches excluded)."""
    if not GEN_DIR.is_dir():
        return {}
    return {p.name: p.read_bytes() for p in sorted(GEN_DIR.iterdir()) if p.is_file()}


def _normalise(content: bytes) -> bytes:
    text = content.decode("utf-8", errors="surrogateescape")
    for pattern in _VERSION_STAMPS:
        text = pattern.sub("<version>", text)
    return text.encode("utf-8", errors="surrogateescape")


def stale_files(committed: dict[str, bytes], fresh: dict[str, bytes]) -> list[str]:
    """Names (relative to the repo) of files that are missing, extra or different."""
    stale: list[str] = []
    for name in sorted(set(committed) | set(fresh)):
        rel = f"{VIRTUAL_PREFIX}/{name}"
        if name not in committed:
            stale.append(f"{rel} (missing)")
        elif name not in fresh:
            stale.append(f"{rel} (not generated by any .proto: remove it)")
        elif _normalise(committed[name]) != _normalise(fresh[name]):
            stale.append(f"{rel} (differs)")
    return stale


def write(fresh: dict[str, bytes]) -> list[str]:
    """Make protos/gen hold exactly ``fresh``; return the names that changed.

    Unchanged files are not rewritten, so their mtimes (and editors' buffers) stay put.
    """
    GEN_DIR.mkdir(exist_ok=True)
    changed: list[str] = []
    for name in committed_files():
        if name not in fresh:
            (GEN_DIR / name).unlink()
            changed.append(name)
    for name, content in fresh.items():
        path = GEN_DIR / name
        if not path.exists() or path.read_bytes() != content:
            path.write_bytes(content)
            changed.append(name)
    return sorted(changed)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m protos.generate", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--check",
        action="store_true",
        help="do not write; exit 1 and list stale files if protos/gen differs from a fresh generation",
    )
    args = parser.parse_args(argv)
    try:
        fresh = fresh_generation()
    except GenerateError as err:
        print(f"protos.generate: {err}", file=sys.stderr)
        return 2
    if args.check:
        stale = stale_files(committed_files(), fresh)
        if stale:
            print("generated protobuf code is stale; run `python -m protos.generate`:", file=sys.stderr)
            for line in stale:
                print(f"  {line}", file=sys.stderr)
            return 1
        print(f"protos/gen is up to date ({len(fresh)} files)")
        return 0
    changed = write(fresh)
    for name in changed:
        print(f"wrote {VIRTUAL_PREFIX}/{name}")
    if not changed:
        print(f"protos/gen is up to date ({len(fresh)} files)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
