"""Wiring of admission: an HTTPS server that answers the API server's AdmissionReviews on ``POST /validate``.

Each request: read the review at the door (review.py; not one: HTTP 400), decide (decision.py, pure), answer,
count it by resource and outcome, and log a refusal with the object it names (an admission at DEBUG: one line per
claim the cluster creates would bury the rest).

It runs without NATS (``libs.runtime.server_main``), on purpose. A decision needs only the object in the review
and the structs of libs/claims/configapi; nothing on the bus helps. On the bus it would need a role of its own that
grants nothing but ``$SRV`` registration, and its readiness would follow its NATS connection: a NATS outage would
take the webhook out of its Service, and the API server would then fail (or, with failurePolicy Ignore, wait for)
claim writes a webhook with everything it needs could have answered. So it gets the runtime's settings, logs,
traces, metrics and probes, and no bus; ``gpudra services`` does not list it (its Deployment says where it runs).

The certificate and key are read from files (a Secret's ``tls.crt`` and ``tls.key``) and read again when they
change: cert-manager renews a certificate well before it expires, the kubelet swaps the mounted files, and new
connections get the new certificate without a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import Counter, Histogram

from libs.runtime.startup import EXIT_CONFIG, StartupError
from libs.telemetry.metrics import by_labels
from services.admission.decision import Decoder, decide, decoders, describe
from services.admission.review import BadReview, answer, read_review
from services.admission.settings import Settings

log = logging.getLogger(__name__)

REVIEW_PATH = "/validate"
MAX_REVIEW_BYTES = 16 * 1024**2
"""An update's review holds the object twice; kube-apiserver takes requests of up to 3 MiB."""
RELOAD_SECONDS = 10.0
"""How often the certificate files are checked for a change (two stat calls)."""

REVIEWS = Counter(
    "gpudra_admission_reviews_total",
    "AdmissionReviews answered, by resource and outcome (allowed, refused, bad_request: not a review)",
    ["resource", "outcome"],
)
REVIEW_SECONDS = Histogram(
    "gpudra_admission_review_seconds",
    "from request to answer, body read included",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25),
)
_reviews = by_labels(REVIEWS)


class Certificate:
    """The server's TLS context, its certificate and key re-read into it when their files change."""

    def __init__(self, cert_file: str, key_file: str) -> None:
        self._files = (cert_file, key_file)
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self._stamp = self._stat()
        try:
            self.context.load_cert_chain(cert_file, key_file)
        except (OSError, ssl.SSLError) as exc:
            raise StartupError(
                EXIT_CONFIG,
                f"certificate {cert_file}, key {key_file}: {exc} (settings --tls-cert-file, --tls-key-file)",
            ) from exc

    def _stat(self) -> tuple[tuple[int, int], ...] | None:
        try:
            return tuple((stat.st_mtime_ns, stat.st_size) for stat in map(os.stat, self._files))
        except OSError:
            return None

    def reload_if_changed(self) -> bool:
        """Load the files into the context if they changed since the last load; a pair that does not load (a key
        that does not match, a file half gone) keeps the old one until the next change."""
        stamp = self._stat()
        if stamp is None or stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            self.context.load_cert_chain(*self._files)
        except (OSError, ssl.SSLError) as exc:
            log.error("the changed certificate does not load, serving the previous one: %s", exc)
            return False
        log.info("certificate reloaded", extra={"cert_file": self._files[0]})
        return True

    async def watch(self, every: float) -> None:
        while True:
            await asyncio.sleep(every)
            self.reload_if_changed()


class Reviewer:
    """The HTTP edge of the decision: body in, AdmissionReview out, counted and logged."""

    def __init__(self, judged: Mapping[str, Decoder]) -> None:
        self._judged = judged

    async def handle(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        try:
            return await self._answer(request)
        finally:
            REVIEW_SECONDS.observe(time.perf_counter() - started)

    async def _answer(self, request: web.Request) -> web.Response:
        try:
            asked = read_review(await request.read())
        except BadReview as exc:
            _reviews("", "bad_request").inc()
            log.warning("refused a request that is not an admission review: %s", exc)
            return web.Response(status=400, text=f"{exc}\n")
        response = decide(asked, self._judged)
        resource = asked.resource.resource
        fields = {
            "object": describe(asked),
            "operation": asked.operation,
            "review_uid": asked.uid,
        }
        if response.allowed:
            _reviews(resource, "allowed").inc()
            log.debug("admitted", extra=fields)
        else:
            _reviews(resource, "refused").inc()
            message = response.status.message if response.status else ""
            log.info("refused: %s", message, extra=fields)
        return web.Response(body=answer(response), content_type="application/json")


@dataclass(frozen=True)
class Webhook:
    """The running server: where it listens (the port it got when asked for 0)."""

    host: str
    port: int
    certificate: Certificate

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}{REVIEW_PATH}"


@asynccontextmanager
async def running(settings: Settings, *, reload_seconds: float = RELOAD_SECONDS) -> AsyncIterator[Webhook]:
    """Serve until the block ends; a certificate that does not load ends the start (exit 5)."""
    certificate = Certificate(settings.tls_cert_file, settings.tls_key_file)
    app = web.Application(client_max_size=MAX_REVIEW_BYTES)
    app.router.add_post(
        REVIEW_PATH, Reviewer(decoders(settings.driver_name, settings.compute_domain_driver_name)).handle
    )
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, settings.webhook_host, settings.webhook_port, ssl_context=certificate.context)
    watcher: asyncio.Task[None] | None = None
    try:
        await site.start()
        port = runner.addresses[0][1]
        watcher = asyncio.create_task(certificate.watch(reload_seconds), name="certificate-reload")
        log.info("answering admission reviews", extra={"port": port, "driver": settings.driver_name})
        yield Webhook(host=settings.webhook_host, port=port, certificate=certificate)
    finally:
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        await runner.cleanup()
