"""Ed25519 nkeys: made with PyPI ``nkeys`` (which has no helper to create one, nor to verify with a public key)."""

from __future__ import annotations

import base64
import binascii
import enum
import os

import nacl.exceptions
import nacl.signing
import nkeys


class Kind(enum.IntEnum):
    """The nkey prefix byte: what the key is for, and the first letter of its public form."""

    OPERATOR = nkeys.PREFIX_BYTE_OPERATOR
    ACCOUNT = nkeys.PREFIX_BYTE_ACCOUNT
    USER = nkeys.PREFIX_BYTE_USER


def new_seed(kind: Kind) -> str:
    return bytes(nkeys.encode_seed(os.urandom(32), int(kind))).decode()


def key_pair(seed: str) -> nkeys.KeyPair:
    try:
        return nkeys.from_seed(bytearray(seed.strip().encode()))
    except Exception as exc:
        raise ValueError(f"not an nkey seed: {exc}") from None


def public_key(seed: str) -> str:
    return bytes(key_pair(seed).public_key).decode()


def verify(public: str, data: bytes, signature: bytes) -> bool:
    """Whether ``signature`` over ``data`` was made by the key whose public form is ``public``."""
    try:
        raw = base64.b32decode(public + "=" * (-len(public) % 8))
    except (binascii.Error, ValueError):
        return False
    if len(raw) != 35:  # prefix byte, 32-byte key, CRC-16
        return False
    try:
        nacl.signing.VerifyKey(raw[1:33]).verify(data, signature)
    except nacl.exceptions.BadSignatureError:
        return False
    return True
