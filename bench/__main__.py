"""``python -m bench [NAME [ARGS...]]``: one benchmark with its own flags, or all of them with defaults."""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path


def available() -> list[str]:
    here = Path(__file__).parent
    return sorted(m.name for m in pkgutil.iter_modules([str(here)]) if not m.name.startswith("_"))


def main(argv: list[str]) -> int:
    if argv and argv[0] not in available():
        print(f"unknown benchmark {argv[0]!r}; available: {', '.join(available())}", file=sys.stderr)
        return 2
    runs = [(argv[0], argv[1:])] if argv else [(name, []) for name in available()]
    for name, args in runs:
        print(f"== bench.{name}", flush=True)
        importlib.import_module(f"bench.{name}").main(args)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
