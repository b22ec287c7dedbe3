"""Kubernetes quantities (``10Gi``, ``512M``, ``1.5e9``) as whole numbers, for MPS memory limits."""

from __future__ import annotations

import decimal
import math
import re

_QUANTITY = re.compile(r"^(?P<number>[+-]?(?:\d+\.?\d*|\.\d+))(?P<suffix>[eE][+-]?\d+|[KMGTPE]i|[numkMGTPE])?$")
_BINARY = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
MAX_QUANTITY = 2**63 - 1
"""Kubernetes: no quantity may represent a number greater than 2^63-1."""


class QuantityError(ValueError):
    pass


def parse_quantity(value: str | int) -> int:
    """The quantity's value rounded up to a whole number (as ``Quantity.Value()`` does); never negative here,
    and at most ``MAX_QUANTITY`` as Kubernetes allows."""
    if isinstance(value, bool):
        raise QuantityError(f"{value!r} is not a quantity")
    if isinstance(value, int):
        number = decimal.Decimal(value)
    else:
        match = _QUANTITY.match(value.strip())
        if not match:
            raise QuantityError(f"{value!r} is not a quantity (examples: 10Gi, 512Mi, 1G)")
        number = _number(value, match["number"], match["suffix"] or "")
    if number < 0:
        raise QuantityError(f"{value!r} is negative")
    if number > MAX_QUANTITY:
        raise QuantityError(f"{value!r} is out of range: a quantity is at most 2^63-1")
    return math.ceil(number)


def _number(value: str, digits: str, suffix: str) -> decimal.Decimal:
    """An exponent too large for ``decimal`` (``1e999999999``) or for ``int`` (thousands of digits) is no quantity."""
    try:
        return decimal.Decimal(digits) * _scale(suffix)
    except (decimal.Overflow, ValueError):
        raise QuantityError(f"{value!r} is out of range: a quantity is at most 2^63-1") from None


def _scale(suffix: str) -> decimal.Decimal:
    if suffix in _BINARY:
        return decimal.Decimal(1024) ** _BINARY[suffix]
    if suffix in _DECIMAL:
        return decimal.Decimal(10) ** _DECIMAL[suffix]
    if suffix:
        return decimal.Decimal(10) ** int(suffix[1:])
    return decimal.Decimal(1)
