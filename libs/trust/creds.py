"""``.creds`` files (a user JWT and its nkey seed), written owner-only and checked before nats-py reads them.

nats-py reads a credentials file lazily at connect and does not cope with a bad one (a file without the JWT
section makes it loop forever), so every process checks its file first and refuses to start with a message
that names the file and what is wrong: missing, unreadable, not a credentials file, a seed that does not
belong to the JWT, or a JWT that has expired.
"""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import msgspec

from libs.files import write_atomically
from libs.trust import jwt, keys

_JWT_BEGIN = "-----BEGIN NATS USER JWT-----"
_JWT_END = "------END NATS USER JWT------"
_SEED_BEGIN = "-----BEGIN USER NKEY SEED-----"
_SEED_END = "------END USER NKEY SEED------"


class CredentialsError(ValueError):
    """The credentials file cannot be used; the message names it and says why."""


class Credentials(msgspec.Struct, frozen=True, kw_only=True):
    path: str
    name: str
    user: str
    expires: int | None
    """Unix time the server stops accepting it, if any."""
    shared_with_others: bool
    """Group or others may read the file (a warning: it is a secret)."""


def render(user_jwt: str, seed: str) -> bytes:
    return (
        f"{_JWT_BEGIN}\n{user_jwt}\n{_JWT_END}\n\n"
        "************************* IMPORTANT *************************\n"
        "NKEY Seed printed below can be used to sign and prove identity.\n"
        "NKEYs are sensitive and should be treated as secrets.\n\n"
        f"{_SEED_BEGIN}\n{seed}\n{_SEED_END}\n"
    ).encode()


def write(path: Path, user_jwt: str, seed: str) -> Path:
    """Owner-only (0600) in an owner-only directory, replaced atomically."""
    write_atomically(path, render(user_jwt, seed), mode=0o600, parent_mode=0o700)
    return path


def _section(lines: list[str], begin: str) -> str:
    for index, line in enumerate(lines[:-1]):
        if line.strip() == begin:
            return lines[index + 1].strip()
    return ""


def check(path: str | Path, *, now: float | None = None) -> Credentials:
    """Everything nats-py will need from the file, or a ``CredentialsError`` a person can act on."""
    where = f"NATS credentials file {path}"
    try:
        text = Path(path).read_text()
        mode = Path(path).stat().st_mode
    except FileNotFoundError:
        raise CredentialsError(f"{where} does not exist (setting --nats-creds / GPUDRA_NATS_CREDS)") from None
    except PermissionError:
        raise CredentialsError(f"{where} is not readable by this user (uid {os.getuid()})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CredentialsError(f"{where} cannot be read: {exc}") from None
    lines = text.splitlines()
    token, seed = _section(lines, _JWT_BEGIN), _section(lines, _SEED_BEGIN)
    if not token or not seed:
        raise CredentialsError(f"{where} is not a credentials file: it needs a user JWT and an nkey seed section")
    try:
        claims = jwt.decode(token, now=now)
        user = keys.public_key(seed)
    except (jwt.JwtError, ValueError) as exc:
        raise CredentialsError(f"{where}: {exc}") from None
    if claims.get("sub") != user:
        raise CredentialsError(f"{where}: the seed is not the key the JWT was issued to ({claims.get('sub')})")
    expires = claims.get("exp")
    return Credentials(
        path=str(path),
        name=str(claims.get("name", "")),
        user=user,
        expires=expires if isinstance(expires, int) else None,
        shared_with_others=bool(mode & (stat.S_IRWXG | stat.S_IRWXO)),
    )


def remaining(credentials: Credentials, now: float | None = None) -> float | None:
    """Seconds until the credentials expire (None: never)."""
    if credentials.expires is None:
        return None
    return credentials.expires - (time.time() if now is None else now)
