"""Commands over NATS request/reply, served on the ``nats.micro`` framework.

``nats.micro`` gives every service ``$SRV.PING/INFO/STATS`` for free: ``nats micro ls`` is an operator's
first check of what runs where. We add typed requests and replies, coded errors, and trace context.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

import msgspec
from nats.aio.client import Client
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from nats.micro import add_service
from nats.micro.request import Request
from nats.micro.service import EndpointConfig, Service, ServiceConfig
from opentelemetry.trace import SpanKind

from libs.bus import tracing
from libs.bus.errors import CommandError, ServiceTimeout, ServiceUnavailable
from libs.bus.metrics import REQUESTS_BY
from libs.bus.provenance import relayed_command
from libs.bus.publisher import check_size
from libs.events import Command, Reply
from libs.events.subjects import rpc_subject

log = logging.getLogger(__name__)

C = TypeVar("C", bound=Command)
R = TypeVar("R", bound=Reply)

ERROR_HEADER = "Nats-Service-Error"
ERROR_CODE_HEADER = "Nats-Service-Error-Code"


class Endpoint(Generic[C]):
    """A command type and the coroutine that answers it.

    ``concurrency`` > 1 handles that many requests at once: ``nats.micro`` calls a handler for one request
    at a time per subscription, which would serialize independent work such as claims on different GPUs.
    """

    def __init__(self, command: type[C], handler: Callable[[C], Awaitable[Reply]], *, concurrency: int = 1) -> None:
        self.command = command
        self.handler = handler
        self.concurrency = concurrency

    @property
    def name(self) -> str:
        return f"{self.command.service}-{self.command.endpoint}"

    async def answer(self, request: Request) -> None:
        refused = relayed_command(_reply_of(request))
        if refused:
            # Nobody waits for an answer (a relay has no requester's inbox): refuse loudly, answer nothing.
            REQUESTS_BY(self.name, "403").inc()
            log.warning("refused a command: %s", refused, extra={"endpoint": self.name, "subject": request.subject})
            return
        parent = tracing.extract(request.headers)
        attrs = tracing.attributes(request.subject, "process", body_size=len(request.data))
        with tracing.messaging_span(f"process {request.subject}", SpanKind.SERVER, attrs, parent) as span:
            try:
                command = msgspec.json.decode(request.data, type=self.command)
                reply = await self.handler(command)
            except msgspec.DecodeError as exc:
                await self._fail(request, span, CommandError(400, f"bad {self.command.__name__}: {exc}"))
                return
            except CommandError as exc:
                await self._fail(request, span, exc)
                return
            except Exception as exc:
                log.exception("command handler crashed", extra={"endpoint": self.name})
                await self._fail(request, span, CommandError(500, f"{self.name} failed: {exc!r}"))
                return
            await request.respond(msgspec.json.encode(reply))
        REQUESTS_BY(self.name, "200").inc()

    async def _fail(self, request: Request, span: Any, error: CommandError) -> None:
        tracing.mark_error(span, error.message)
        REQUESTS_BY(self.name, str(error.code)).inc()
        await request.respond_error(str(error.code), " ".join(error.message.split())[:1024])


def _reply_of(request: Request) -> str | None:
    reply: str | None = request._msg.reply  # nats.micro's Request has no public accessor for it
    return reply


def _concurrent(endpoint: Endpoint[Any]) -> Callable[[Request], Awaitable[None]]:
    if endpoint.concurrency <= 1:
        return endpoint.answer
    slots = asyncio.Semaphore(endpoint.concurrency)
    tasks: set[asyncio.Task[None]] = set()

    async def run(request: Request) -> None:
        async with slots:
            await endpoint.answer(request)

    async def spawn(request: Request) -> None:
        task = asyncio.create_task(run(request))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    return spawn


async def serve(
    nc: Client,
    *,
    name: str,
    version: str,
    node: str,
    endpoints: Sequence[Endpoint[Any]] = (),
    metadata: dict[str, str] | None = None,
    description: str = "",
) -> Service:
    """Register the service (even with no endpoints, so ``$SRV.PING`` lists it) and its endpoints."""
    config = ServiceConfig(
        name=name,
        version=version,
        description=description or f"gpudra {name}",
        metadata={"node": node, "project": "gpudra", **(metadata or {})},
    )
    service = await add_service(nc, config)
    for endpoint in endpoints:
        command = endpoint.command
        await service.add_endpoint(
            EndpointConfig(
                name=endpoint.name,
                subject=rpc_subject(node, command.service, command.endpoint),
                handler=_concurrent(endpoint),
                metadata={"request": command.__name__, "reply": command.reply.__name__},
            )
        )
    return service


async def request(nc: Client, node: str, command: Command, reply_type: type[R], *, timeout: float) -> R:
    """Send a command to ``node`` and decode its typed reply; errors raise ``CommandError`` subclasses."""
    subject = rpc_subject(node, command.service, command.endpoint)
    body = msgspec.json.encode(command)
    headers: dict[str, str] = {}
    attrs = tracing.attributes(subject, "send", body_size=len(body))
    with tracing.messaging_span(f"send {subject}", SpanKind.CLIENT, attrs) as span:
        tracing.inject(headers)
        check_size(nc, subject, headers, body)
        try:
            msg = await nc.request(subject, body, timeout=timeout, headers=headers)
        except NoRespondersError:
            raise ServiceUnavailable(
                f"no {command.service} service answers {command.endpoint} on node {node} ({subject})"
            ) from None
        except NatsTimeout:
            raise ServiceTimeout(
                f"{command.service} on node {node} did not answer {command.endpoint} within {timeout:g}s"
            ) from None
        code = (msg.headers or {}).get(ERROR_CODE_HEADER)
        if code:
            message = (msg.headers or {}).get(ERROR_HEADER, "")
            tracing.mark_error(span, message)
            raise CommandError(int(code) if code.isdigit() else 500, message)
        try:
            return msgspec.json.decode(msg.data, type=reply_type)
        except msgspec.DecodeError as exc:
            raise CommandError(502, f"{command.service} on node {node} sent a bad reply: {exc}") from None
