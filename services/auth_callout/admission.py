"""Who is let onto the bus, and as what: a reviewed ServiceAccount token and the client's name, to roles on a node.

Plain functions over plain data; the service feeds them a TokenReview's answer and the connection's name.

- The token must be authenticated for the configured audience, and belong to a ServiceAccount the settings
  name (``namespace/name=role+role,...``; ``node`` stands for every node role).
- The client names itself ``gpudra-<principal>@<node>`` (``libs.bus.connection`` does): the principal picks which
  of the account's roles this connection gets (a node pod's discovery container gets discovery's, not the
  shim's), so each process holds only its own service's permissions.
- A node role needs the node from the token (the API server wrote it when it issued the pod's token), and the
  node the client names must be that one: the client builds its inbox prefix from it, and a pod cannot speak
  for another node by claiming its name.
"""

from __future__ import annotations

import re

import msgspec

from libs.kube.tokenreview import TokenReviewStatus
from libs.trust.roles import NODE_ROLES, PRINCIPALS, Role

NODE_GROUP = "node"
"""In the setting: every node role."""

_CLIENT_NAME = re.compile(r"gpudra-(?P<principal>[a-z_]+)@(?P<node>[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?)")

Grants = dict[tuple[str, str], frozenset[Role]]
"""(namespace, ServiceAccount) -> the roles its tokens may hold."""


class Admitted(msgspec.Struct, frozen=True, kw_only=True):
    principal: str
    node: str
    roles: frozenset[Role]
    service_account: str


class Refused(msgspec.Struct, frozen=True, kw_only=True):
    reason: str


def parse_grants(text: str) -> Grants:
    """``namespace/name=role+role,...``; a ``ValueError`` names the entry that does not parse."""
    grants: Grants = {}
    for entry in (part.strip() for part in text.split(",")):
        if not entry:
            continue
        account, equals, roles = entry.partition("=")
        namespace, slash, name = account.strip().partition("/")
        if not (equals and slash and namespace and name and roles.strip()):
            raise ValueError(f"service account grant {entry!r}: expected namespace/name=role+role")
        grants[(namespace, name)] = frozenset(_roles(roles, entry))
    return grants


def _roles(text: str, entry: str) -> set[Role]:
    roles: set[Role] = set()
    for word in (w.strip() for w in text.split("+")):
        if word == NODE_GROUP:
            roles |= NODE_ROLES
            continue
        try:
            roles.add(Role(word))
        except ValueError:
            known = ", ".join([NODE_GROUP, *Role])
            raise ValueError(f"service account grant {entry!r}: unknown role {word!r} (known: {known})") from None
    return roles


def admit(review: TokenReviewStatus, audience: str, client_name: str, grants: Grants) -> Admitted | Refused:
    if not review.authenticated:
        return Refused(reason=f"token not accepted by the API server: {review.error or 'not authenticated'}")
    if audience not in review.audiences:
        return Refused(reason=f"token is not for audience {audience!r} (it is for {review.audiences})")
    account = review.user.service_account
    if account is None:
        return Refused(reason=f"{review.user.username!r} is not a ServiceAccount")
    who = "/".join(account)
    granted = grants.get(account)
    if granted is None:
        return Refused(reason=f"ServiceAccount {who} may not use the bus (setting --service-accounts)")
    named = _CLIENT_NAME.fullmatch(client_name)
    if named is None or named["principal"] not in PRINCIPALS:
        return Refused(reason=f"{who}: client name {client_name!r} is not gpudra-<client>@<node> of a known client")
    principal, claimed = named["principal"], named["node"]
    roles = granted & frozenset(PRINCIPALS[principal])
    if not roles:
        return Refused(reason=f"ServiceAccount {who} may not act as {principal}")
    if roles & NODE_ROLES:
        if not review.user.node:
            return Refused(reason=f"{who} as {principal}: the token names no node (a pod-bound token is needed)")
        if claimed != review.user.node:
            return Refused(
                reason=f"{who} as {principal}: claims node {claimed}, its token is of node {review.user.node}"
            )
    return Admitted(principal=principal, node=claimed, roles=roles, service_account=who)
