"""Wiring of auth_callout: answers nats-server's ``$SYS.REQ.USER.AUTH`` requests, several at once.

It connects as the callout's own user in the callout account (``--nats-user``, ``--nats-password-file``), so
it is the one client the server does not send through itself. Each request: read it, review the client's token
with the API server, decide (admission.py), answer signed. A request it cannot read gets no answer (the server
refuses the client when its ``authorization.timeout`` runs out); every other one gets an answer, never a
silence, so a refused client is told at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import nkeys
from nats.aio.msg import Msg
from prometheus_client import Counter, Histogram

from libs.bus import Bus, Endpoint
from libs.kube import KubeError
from libs.kube.cluster import ClusterKube
from libs.runtime.startup import EXIT_CONFIG, EXIT_KUBE, StartupError
from libs.trust.keys import key_pair
from libs.trust.roles import permissions
from services.auth_callout.admission import Admitted, Grants, admit, parse_grants
from services.auth_callout.callout import BadRequest, CalloutRequest, admitted, read_request, refused
from services.auth_callout.settings import Settings

log = logging.getLogger(__name__)

AUTH_SUBJECT = "$SYS.REQ.USER.AUTH"
QUEUE = "auth_callout"
IN_FLIGHT = 64
"""Requests answered at once: a node restart storm connects thousands of clients, each waits for its review."""

DECISIONS = Counter("gpudra_auth_callout_decisions_total", "connections admitted or refused", ["outcome"])
DECISION_SECONDS = Histogram(
    "gpudra_auth_callout_decision_seconds",
    "from request to answer (the TokenReview is most of it; nats-py gives up on a connect after ~2 s)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5),
)


class Callout:
    def __init__(self, kube: ClusterKube, issuer: nkeys.KeyPair, grants: Grants, settings: Settings) -> None:
        self._kube = kube
        self._issuer = issuer
        self._grants = grants
        self._settings = settings
        self._slots = asyncio.Semaphore(IN_FLIGHT)
        self._tasks: set[asyncio.Task[None]] = set()

    async def on_request(self, msg: Msg) -> None:
        task = asyncio.create_task(self._answer(msg))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, msg: Msg) -> None:
        started = time.perf_counter()
        async with self._slots:
            try:
                request = read_request(msg.data)
            except BadRequest as exc:
                log.warning("ignored a callout request: %s", exc)
                return
            answer = await self._decide(request)
            await msg.respond(answer)
        DECISION_SECONDS.observe(time.perf_counter() - started)

    async def _decide(self, request: CalloutRequest) -> bytes:
        settings = self._settings
        context = {"client": request.client_name, "host": request.client_host}
        if not request.token:
            return self._refuse(
                request, "no token (set --nats-token-file to a projected ServiceAccount token)", context
            )
        try:
            review = await self._kube.review_token(request.token, [settings.token_audience])
        except KubeError as exc:
            return self._refuse(request, f"the token could not be reviewed: {exc}", context)
        decision = admit(review, settings.token_audience, request.client_name, self._grants)
        if not isinstance(decision, Admitted):
            return self._refuse(request, decision.reason, context)
        granted = permissions(decision.roles, principal=decision.principal, node=decision.node)
        DECISIONS.labels("admitted").inc()
        log.info(
            "admitted %s on node %s as %s",
            decision.principal,
            decision.node,
            "+".join(sorted(decision.roles)),
            extra={**context, "service_account": decision.service_account},
        )
        return admitted(
            request,
            self._issuer,
            name=f"{decision.principal}@{decision.node} ({decision.service_account})",
            granted=granted,
            account=settings.target_account,
            lifetime=settings.user_lifetime_seconds,
        )

    def _refuse(self, request: CalloutRequest, reason: str, context: dict[str, str]) -> bytes:
        DECISIONS.labels("refused").inc()
        log.warning("refused a connection: %s", reason, extra=context)
        return refused(request, self._issuer, reason)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def load_issuer(path: str) -> nkeys.KeyPair:
    try:
        return key_pair(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise StartupError(EXIT_CONFIG, f"issuer seed {path}: {exc} (setting --issuer-seed-file)") from exc


@asynccontextmanager
async def lifespan(bus: Bus, settings: Settings) -> AsyncIterator[Sequence[Endpoint[Any]]]:
    issuer = load_issuer(settings.issuer_seed_file)
    try:
        grants = parse_grants(settings.service_accounts)
    except ValueError as exc:
        raise StartupError(EXIT_CONFIG, f"{exc} (setting --service-accounts)") from exc
    try:
        kube = await ClusterKube.connect(settings.kubeconfig)
    except KubeError as exc:
        raise StartupError(EXIT_KUBE, f"{exc} (setting --kubeconfig)") from exc
    callout = Callout(kube, issuer, grants, settings)
    subscription = await bus.nc.subscribe(AUTH_SUBJECT, queue=QUEUE, cb=callout.on_request)
    try:
        log.info("answering auth callout requests", extra={"accounts": len(grants)})
        yield []
    finally:
        await subscription.unsubscribe()
        await callout.stop()
        await kube.close()
