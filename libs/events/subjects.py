"""The subject layout: addresses that read like ``gpudra.v1.<node>.<domain>.<topic>``.

The node name is a subject token so NATS permissions can confine a node's credentials to its own subjects
(``gpudra.v1.<node>.>``) while a cluster-wide consumer subscribes with a wildcard (``gpudra.v1.*.health.>``).
Commands live under ``gpudra.v1.<node>.rpc.`` so that no event stream ever captures a request.
"""

from __future__ import annotations

import enum
import re

ROOT = "gpudra.v1"
DEADLETTER_ROOT = "gpudra.deadletter"

# Not a valid Kubernetes node name (those cannot start with "_"): the token of cluster-wide facts.
CLUSTER = "_cluster"

_NODE_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")


class Domain(enum.StrEnum):
    INVENTORY = "inventory"
    CLAIMS = "claims"
    HEALTH = "health"
    REMEDIATION = "remediation"
    COMPUTEDOMAINS = "computedomains"
    SYSTEM = "system"


def node_token(node: str) -> str:
    """Kubernetes node names may contain dots, NATS tokens may not; "_" never occurs in a node name."""
    if node == CLUSTER:
        return node
    if not _NODE_NAME.fullmatch(node):
        raise ValueError(f"node name {node!r} is not a valid Kubernetes node name")
    return node.replace(".", "_")


def node_from_token(token: str) -> str:
    return token if token == CLUSTER else token.replace("_", ".")


def node_of_subject(subject: str) -> str:
    """The node an event or command subject (``gpudra.v1.<node>.…``) is about."""
    root, _, rest = subject.partition(f"{ROOT}.")
    token = rest.partition(".")[0]
    if root or not token:
        raise ValueError(f"{subject!r} is not a gpudra subject ({ROOT}.<node>.…)")
    return node_from_token(token)


def event_subject(node: str, domain: str, topic: str) -> str:
    return f"{ROOT}.{node_token(node)}.{domain}.{topic}"


def domain_filter(domain: str) -> str:
    """All events of one domain on every node: what a stream captures and a cluster consumer reads."""
    return f"{ROOT}.*.{domain}.>"


def rpc_subject(node: str, service: str, endpoint: str) -> str:
    return f"{ROOT}.{node_token(node)}.rpc.{service}.{endpoint}"


def deadletter_subject(stream: str, consumer: str) -> str:
    return f"{DEADLETTER_ROOT}.{stream}.{consumer}"


def inbox_prefix(principal: str, node_or_wildcard: str) -> str:
    """Where a client's replies arrive (nats-py ``inbox_prefix``): ``_INBOX.<principal>.<node token>``.

    Both ends compute it: the client from its service name and node, whoever issues its credentials from the
    same two, so a client can be confined to its own inboxes (``libs.trust``).
    """
    token = node_or_wildcard if node_or_wildcard == "*" else node_token(node_or_wildcard)
    return f"_INBOX.{principal}.{token}"
