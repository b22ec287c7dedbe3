"""NATS JWTs: the signed claims nats-server trusts in operator mode and in auth-callout answers.

The format is nats-io/jwt v2: three base64url parts without padding, a header ``{"typ":"JWT","alg":
"ed25519-nkey"}``, and an ed25519 signature over ``<header>.<claims>`` by the issuer's nkey. The claim bodies
(operator, account, user, authorization response) are written here from the facts in nats-server's own
checks; the PyPI packages that wrap them cover only part of it (nats-jwt has no callout claims and pins old
dependencies), so this module is the one place that knows the wire shape.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import time
from typing import Any

import msgspec
import nkeys

from libs.trust import keys
from libs.trust.permissions import Permissions

HEADER = {"typ": "JWT", "alg": "ed25519-nkey"}
USER = "user"
ACCOUNT = "account"
OPERATOR = "operator"
AUTHORIZATION_RESPONSE = "authorization_response"
AUTHORIZATION_REQUEST = "authorization_request"
NO_LIMIT = -1
RESPONSES_PER_REQUEST = 4


class JwtError(ValueError):
    """A token that does not decode, is not signed by its issuer, or has expired."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def encode(claims: dict[str, Any], signer: nkeys.KeyPair) -> str:
    """Sign ``claims`` (``iss`` is set to the signer; ``iat`` and ``jti`` are filled in when missing)."""
    body = {"iat": int(time.time()), **claims, "iss": signer.public_key.decode()}
    body.pop("jti", None)
    digest = hashlib.sha512(msgspec.json.encode(body)).digest()[:32]
    body["jti"] = base64.b32encode(digest).decode().rstrip("=")
    signing_input = f"{_b64(msgspec.json.encode(HEADER))}.{_b64(msgspec.json.encode(body))}"
    return f"{signing_input}.{_b64(signer.sign(signing_input.encode()))}"


def decode(token: str, *, verify: bool = True, now: float | None = None) -> dict[str, Any]:
    """The claims of ``token``, checked against the public key in its own ``iss`` (and ``exp``) when verifying.

    Checking against ``iss`` proves only that the holder of that key signed it; the caller decides whether
    that key is one it trusts.
    """
    try:
        header_part, claims_part, signature_part = token.strip().split(".")
        header = msgspec.json.decode(_unb64(header_part))
        claims = msgspec.json.decode(_unb64(claims_part))
        signature = _unb64(signature_part)
    except (ValueError, binascii.Error, msgspec.DecodeError) as exc:
        raise JwtError(f"not a NATS JWT: {exc}") from None
    if not isinstance(claims, dict) or not isinstance(header, dict):
        raise JwtError("not a NATS JWT: header and claims must be JSON objects")
    if header.get("alg") != HEADER["alg"]:
        raise JwtError(f"not a NATS JWT: algorithm {header.get('alg')!r}, expected ed25519-nkey")
    if verify:
        _verify(claims, f"{header_part}.{claims_part}".encode(), signature)
        expires = claims.get("exp")
        if isinstance(expires, int) and expires <= (time.time() if now is None else now):
            raise JwtError(f"expired at {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(expires))}")
    return claims


def _verify(claims: dict[str, Any], signed: bytes, signature: bytes) -> None:
    issuer = claims.get("iss")
    if not isinstance(issuer, str):
        raise JwtError("no issuer (iss) in the claims")
    if not keys.verify(issuer, signed, signature):
        raise JwtError(f"signature does not verify with the issuer key {issuer}")


def operator_claims(name: str, operator: str, system_account: str) -> dict[str, Any]:
    return {
        "name": name,
        "sub": operator,
        "nats": {"system_account": system_account, "type": OPERATOR, "version": 2},
    }


def account_claims(name: str, account: str, *, jetstream: bool) -> dict[str, Any]:
    limits: dict[str, Any] = {
        "subs": NO_LIMIT,
        "data": NO_LIMIT,
        "payload": NO_LIMIT,
        "imports": NO_LIMIT,
        "exports": NO_LIMIT,
        "wildcards": True,
        "conn": NO_LIMIT,
        "leaf": NO_LIMIT,
    }
    if jetstream:  # the server turns JetStream on for an account whose storage limits are not zero
        limits |= {"mem_storage": NO_LIMIT, "disk_storage": NO_LIMIT, "streams": NO_LIMIT, "consumer": NO_LIMIT}
    return {
        "name": name,
        "sub": account,
        "nats": {"limits": limits, "default_permissions": {"pub": {}, "sub": {}}, "type": ACCOUNT, "version": 2},
    }


def _subjects(allow: frozenset[str], deny: frozenset[str]) -> dict[str, list[str]]:
    # An empty allow list is still sent: without one nats-server would allow the whole account.
    return {"allow": sorted(allow), **({"deny": sorted(deny)} if deny else {})}


def user_claims(
    name: str,
    user: str,
    permissions: Permissions,
    *,
    expires: int | None = None,
    audience: str | None = None,
) -> dict[str, Any]:
    """A user with explicit allow lists: with none, nats-server would grant the whole account."""
    nats: dict[str, Any] = {
        "pub": _subjects(permissions.publish, permissions.publish_deny),
        "sub": _subjects(permissions.subscribe, permissions.subscribe_deny),
        "subs": NO_LIMIT,
        "data": NO_LIMIT,
        "payload": NO_LIMIT,
        "type": USER,
        "version": 2,
    }
    if permissions.respond:
        # Replies only to requests it received, within the default two minutes; a few per request because one
        # process may serve several nats.micro services (health: the node side and the controller), and each
        # answers the same $SRV.INFO.
        nats["resp"] = {"max": RESPONSES_PER_REQUEST, "ttl": 0}
    claims: dict[str, Any] = {"name": name, "sub": user, "nats": nats}
    if expires is not None:
        claims["exp"] = expires
    if audience is not None:
        claims["aud"] = audience
    return claims


def authorization_response(user: str, server_id: str, *, user_jwt: str = "", error: str = "") -> dict[str, Any]:
    """The callout's answer for one connection: exactly one of a user JWT or an error."""
    if bool(user_jwt) == bool(error):
        raise ValueError("an authorization response carries a user JWT or an error, not both or neither")
    nats: dict[str, Any] = {"type": AUTHORIZATION_RESPONSE, "version": 2}
    nats["jwt" if user_jwt else "error"] = user_jwt or error
    return {"sub": user, "aud": server_id, "nats": nats}
