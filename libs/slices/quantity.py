"""Kubernetes quantities written the way the API server writes them back.

The server stores a quantity in canonical form ("85899345920" comes back as "80Gi", "1000" as "1k"), so a
slice built with any other spelling would look changed on every comparison and be rewritten forever.
Integers only: every capacity and counter here is a whole number.
"""

import functools

_BINARY = ("", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei")
_DECIMAL = ("", "k", "M", "G", "T", "P", "E")


@functools.lru_cache(maxsize=4096)
def format_quantity(value: int) -> str:
    """Canonical form: binary suffix when the value is a multiple of 1024, else decimal exponent of 1000."""
    if value < 0:
        raise ValueError(f"quantities here are never negative, got {value}")
    if value >= 1024 and value % 1024 == 0:
        return _scaled(value, 1024, _BINARY)
    return _scaled(value, 1000, _DECIMAL)


def _scaled(value: int, base: int, suffixes: tuple[str, ...]) -> str:
    step = 0
    while value and value % base == 0 and step < len(suffixes) - 1:
        value //= base
        step += 1
    return f"{value}{suffixes[step]}"
