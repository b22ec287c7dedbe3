"""Cluster mode: a pod's ServiceAccount token, checked by TokenReview against the (test) API server, becomes a
NATS user with its node's permissions, through the auth callout; no secret is shared between nodes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from libs.bus import Bus, BusError
from libs.bus.topology import INVENTORY_BUCKET
from libs.kube.tokenreview import ReviewedUser, TokenReviewStatus
from libs.natsserver import EmbeddedNats
from libs.settings import CommonSettings
from libs.trust.roles import NODE_ROLES, Role
from services.auth_callout.admission import Admitted, Refused, admit, parse_grants
from services.auth_callout.settings import DEFAULT_SERVICE_ACCOUNTS
from tests.support.callout import AUDIENCE, CalloutServerAuth, pod_token, running_callout, token_settings
from tests.support.kubeapi import KubeApiServer
from tests.trust.trust_support import allowed, publish, refusal

NODE_SA, CONTROLLER_SA = "gpudra-node", "gpudra-controller"


@pytest.fixture
async def server(tmp_path: Path, kube_api: KubeApiServer) -> AsyncIterator[EmbeddedNats]:
    """nats-server in callout mode with the callout running, and the bus bootstrapped by the controller's pod."""
    nats = EmbeddedNats(tmp_path / "nats", auth=CalloutServerAuth(tmp_path / "auth"))
    await nats.start()
    async with running_callout(nats, kube_api):
        token = pod_token(kube_api, tmp_path, "gpudra-controller-init", CONTROLLER_SA, "control-1")
        bootstrapper = await Bus.connect(token_settings(nats.url, token, "control-1"), "bootstrap")
        await bootstrapper.bootstrap()
        await bootstrapper.close()
        yield nats
    await nats.stop()


class Decisions(logging.Handler):
    """The callout's log of who it refused and why."""

    def __init__(self) -> None:
        super().__init__()
        self.refused: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("refused a connection"):
            self.refused.append(record.getMessage())


@pytest.fixture
def decisions() -> Iterator[Decisions]:
    handler = Decisions()
    logger = logging.getLogger("services.auth_callout.service")
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


@asynccontextmanager
async def pod_client(
    server: EmbeddedNats, kube_api: KubeApiServer, directory: Path, *, account: str, node: str, client: str
) -> AsyncIterator[Bus]:
    """``client`` in a pod of ``account`` on ``node``, logged in with the pod's token."""
    token = pod_token(kube_api, directory, f"pod-{client}-{node}", account, node)
    bus = await Bus.connect(token_settings(server.url, token, node), client)
    try:
        yield bus
    finally:
        await bus.close()


async def test_a_node_pod_becomes_its_nodes_services_and_nothing_more(
    server: EmbeddedNats, kube_api: KubeApiServer, tmp_path: Path
) -> None:
    async with pod_client(server, kube_api, tmp_path, account=NODE_SA, node="node-a", client="discovery") as discovery:
        kv = await discovery.kv(INVENTORY_BUCKET)
        await allowed(discovery, kv.put("node-a", b"{}"))
        assert "node-b" in await refusal(discovery, publish(discovery, f"$KV.{INVENTORY_BUCKET}.node-b"))
        assert "node-b" in await refusal(discovery, publish(discovery, "gpudra.v1.node-b.inventory.changed"))
        # The same pod's token, but discovery's permissions only: not the health monitors'.
        refused = await refusal(discovery, publish(discovery, "gpudra.v1.node-a.health.events"))
        assert "gpudra.v1.node-a.health.events" in refused


async def test_the_controllers_pod_acts_across_nodes(
    server: EmbeddedNats, kube_api: KubeApiServer, tmp_path: Path
) -> None:
    """(Its init step bootstrapped the bus: the ``server`` fixture did so with the controller's token.)"""
    async with pod_client(
        server, kube_api, tmp_path, account=CONTROLLER_SA, node="control-2", client="health"
    ) as controller:
        await allowed(controller, publish(controller, "gpudra.v1.node-b.health.devices"))
        refused = await refusal(controller, publish(controller, "gpudra.v1.node-b.health.events"))
        assert "node-b.health.events" in refused


@pytest.mark.parametrize(
    ("case", "because"),
    [
        ("another node", "claims node node-b, its token is of node node-a"),
        ("not a gpudra client", "is not gpudra-<client>@<node> of a known client"),
        ("node pod as bootstrap", f"ServiceAccount gpudra-system/{NODE_SA} may not act as bootstrap"),
        ("unknown account", "ServiceAccount gpudra-system/stranger may not use the bus"),
        ("wrong audience", "token not accepted by the API server: invalid bearer token, token audiences is invalid"),
        ("forged token", "token lookup failed"),
        ("pod gone", 'pods "gpudra-node-gone" not found'),
        ("no token", "no token"),
    ],
)
async def test_who_is_refused_and_why(  # noqa: PLR0917 - fixtures and parameters
    server: EmbeddedNats,
    kube_api: KubeApiServer,
    tmp_path: Path,
    decisions: Decisions,
    case: str,
    because: str,
) -> None:
    node, client, account = "node-a", "discovery", NODE_SA
    if case == "another node":
        node = "node-b"
    token = pod_token(kube_api, tmp_path, "gpudra-node-gone" if case == "pod gone" else "p", account, "node-a")
    if case == "not a gpudra client":
        client = "miner"
    elif case == "node pod as bootstrap":
        client = "bootstrap"
    elif case == "unknown account":
        token = pod_token(kube_api, tmp_path, "p2", "stranger", "node-a")
    elif case == "wrong audience":
        token.write_text(kube_api.tokens.issue("gpudra-system", NODE_SA, audiences=("other",), node="node-a"))
    elif case == "forged token":
        token.write_text("eyJ.made-up.sig")
    elif case == "pod gone":
        kube_api.store.delete("pods", "gpudra-node-gone", "gpudra-system")
    settings = token_settings(server.url, token, node)
    if case == "no token":
        settings = CommonSettings(nats_url=server.url, node_name=node)
    with pytest.raises(BusError, match="Authorization Violation"):
        await Bus.connect(settings, client)
    assert any(because in line for line in decisions.refused), decisions.refused


async def test_a_rotated_token_is_read_again_at_reconnect(
    server: EmbeddedNats, kube_api: KubeApiServer, tmp_path: Path
) -> None:
    """The kubelet rewrites the projected token; a reconnect (here after a server restart) sends the new one."""
    token = pod_token(kube_api, tmp_path, "gpudra-node-rot", NODE_SA, "node-a")
    shim = await Bus.connect(token_settings(server.url, token, "node-a"), "kubelet_shim")
    try:
        old = token.read_text()
        pod = kube_api.store.get("pods", "gpudra-node-rot", "gpudra-system")
        assert pod is not None
        token.write_text(
            kube_api.tokens.issue(
                "gpudra-system",
                NODE_SA,
                audiences=(AUDIENCE,),
                node="node-a",
                pod="gpudra-node-rot",
                pod_uid=pod["metadata"]["uid"],
            )
        )
        del kube_api.tokens.issued[old]  # the old one no longer passes review
        reviews = kube_api.tokens.reviews
        shim.link.reconnected.clear()
        await server.restart()
        await reconnected(shim)
        assert kube_api.tokens.reviews > reviews
    finally:
        await shim.close()


async def reconnected(bus: Bus, timeout: float = 20.0) -> None:
    await asyncio.wait_for(bus.link.reconnected.wait(), timeout)
    await bus.nc.flush()


def test_the_default_grants_parse_and_mistakes_are_named() -> None:
    grants = parse_grants(DEFAULT_SERVICE_ACCOUNTS)
    assert grants[("gpudra-system", NODE_SA)] == NODE_ROLES
    assert Role.BOOTSTRAP in grants[("gpudra-system", CONTROLLER_SA)]
    with pytest.raises(ValueError, match="unknown role 'root'"):
        parse_grants("ns/sa=root")
    with pytest.raises(ValueError, match="expected namespace/name=role"):
        parse_grants("sa=node")


def test_admission_is_a_plain_function() -> None:
    grants = parse_grants(DEFAULT_SERVICE_ACCOUNTS)
    user = ReviewedUser(
        username=f"system:serviceaccount:gpudra-system:{NODE_SA}",
        extra={"authentication.kubernetes.io/node-name": ["gpu-1.rack-2"]},
    )
    review = TokenReviewStatus(authenticated=True, audiences=[AUDIENCE], user=user)
    decision = admit(review, AUDIENCE, "gpudra-health@gpu-1.rack-2", grants)
    assert decision == Admitted(
        principal="health",
        node="gpu-1.rack-2",
        roles=frozenset({Role.HEALTH_NODE}),
        service_account=f"gpudra-system/{NODE_SA}",
    )
    nodeless = TokenReviewStatus(authenticated=True, audiences=[AUDIENCE], user=ReviewedUser(username=user.username))
    assert isinstance(admit(nodeless, AUDIENCE, "gpudra-health@gpu-1.rack-2", grants), Refused)
    # The whole name is the claim: a trailing newline (which "$" would let through) names no node.
    assert isinstance(admit(review, AUDIENCE, "gpudra-health@gpu-1.rack-2\n", grants), Refused)
