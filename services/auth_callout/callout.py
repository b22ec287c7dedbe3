"""The auth callout's wire format (nats-server ≥ 2.10, config mode): the server's request, our answer.

The server sends a JWT it signed with its own key (``iss``, which is also ``server_id.id``) naming a fresh user
key for the connection and the client's CONNECT options, the token among them. We answer with a JWT signed by
the issuer account the server trusts (``auth_callout.issuer``): for that user key and that server, either a
user JWT for the target account, with explicit permissions, or an error. Facts: docs/security.md.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec
import nkeys

from libs.trust import jwt
from libs.trust.permissions import Permissions

REQUEST_AUDIENCE = "nats-authorization-request"


class CalloutRequest(msgspec.Struct, frozen=True, kw_only=True):
    user_nkey: str
    server_id: str
    token: str
    client_name: str
    client_host: str


class BadRequest(ValueError):
    """Not an authorization request from a server (nothing to answer: the server times the client out)."""


def read_request(data: bytes) -> CalloutRequest:
    try:
        claims = jwt.decode(data.decode(errors="replace"))
    except jwt.JwtError as exc:
        raise BadRequest(f"authorization request: {exc}") from None
    nats = claims.get("nats")
    if not isinstance(nats, dict) or nats.get("type") != jwt.AUTHORIZATION_REQUEST:
        raise BadRequest("not an authorization request")
    if claims.get("aud") != REQUEST_AUDIENCE:
        raise BadRequest(f"authorization request for audience {claims.get('aud')!r}")
    server = _object(nats, "server_id")
    if server.get("id") != claims.get("iss"):
        raise BadRequest("authorization request not signed by the server it names")
    connect, client = _object(nats, "connect_opts"), _object(nats, "client_info")
    return CalloutRequest(
        user_nkey=str(nats.get("user_nkey", "")),
        server_id=str(server.get("id", "")),
        token=str(connect.get("auth_token") or ""),
        client_name=str(connect.get("name") or client.get("name") or ""),
        client_host=str(client.get("host", "")),
    )


def _object(parent: dict[str, Any], key: str) -> dict[str, Any]:
    value = parent.get(key)
    return value if isinstance(value, dict) else {}


def admitted(
    request: CalloutRequest,
    issuer: nkeys.KeyPair,
    *,
    name: str,
    granted: Permissions,
    account: str,
    lifetime: int,
) -> bytes:
    expires = int(time.time()) + lifetime if lifetime else None
    claims = jwt.user_claims(name, request.user_nkey, granted, expires=expires, audience=account)
    user_jwt = jwt.encode(claims, issuer)
    return _answer(request, issuer, user_jwt=user_jwt)


def refused(request: CalloutRequest, issuer: nkeys.KeyPair, reason: str) -> bytes:
    return _answer(request, issuer, error=reason)


def _answer(request: CalloutRequest, issuer: nkeys.KeyPair, *, user_jwt: str = "", error: str = "") -> bytes:
    claims = jwt.authorization_response(request.user_nkey, request.server_id, user_jwt=user_jwt, error=error)
    return jwt.encode(claims, issuer).encode()
