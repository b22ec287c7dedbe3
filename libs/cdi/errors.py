"""Errors of the CDI library, with a message naming the spec or the name at fault."""

from __future__ import annotations


class CdiError(Exception):
    """A spec cannot be written as asked (a bad name, a version that does not cover its fields, a disk error)."""
