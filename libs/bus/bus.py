"""One object per process that owns the NATS connection and everything built on it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any, TypeVar

from nats.aio.client import Client
from nats.errors import ConnectionClosedError
from nats.js import JetStreamContext
from nats.js.api import PubAck
from nats.js.errors import BucketNotFoundError
from nats.js.kv import KeyValue
from nats.micro.service import Service

from libs.bus import rpc, topology
from libs.bus.connection import Link, connect, jetstream
from libs.bus.consumer import Consumer, ConsumerSpec, Handler
from libs.bus.errors import BusError
from libs.bus.publisher import Publisher
from libs.events import Command, Event, Reply
from libs.events.envelope import event_source
from libs.settings import CommonSettings

log = logging.getLogger(__name__)

R = TypeVar("R", bound=Reply)


class Bus:
    """Publish events, consume them durably, serve and send commands, reach KV buckets."""

    def __init__(self, nc: Client, *, service: str, node: str, link: Link | None = None) -> None:
        self.nc = nc
        self.link = link or Link()
        """What the connection went through: the server's refusals (permission violations), reconnects."""
        self.js: JetStreamContext = jetstream(nc)
        self.service = service
        self.node = node
        self._publisher = Publisher(nc, self.js, source=event_source(node, service))
        self._consumers: list[Consumer] = []
        self._services: list[Service] = []

    @classmethod
    async def connect(cls, settings: CommonSettings, service: str) -> Bus:
        link = Link()
        nc = await connect(settings, service, link=link)
        return cls(nc, service=service, node=settings.node_name, link=link)

    async def bootstrap(self, limits: topology.BusLimits | None = None) -> None:
        """Create or update every stream and bucket, with ``limits`` (the defaults when None): needs the
        bootstrap role."""
        await topology.bootstrap(self.js, limits or topology.BusLimits())

    async def publish(self, event: Event, *, event_id: str | None = None) -> PubAck:
        return await self._publisher.publish(event, event_id=event_id)

    async def consume(self, spec: ConsumerSpec, handler: Handler) -> Consumer:
        consumer = Consumer(self.js, spec, handler, max_payload=self.nc.max_payload, on_failure=self.link.fail)
        await consumer.start()
        self._consumers.append(consumer)
        return consumer

    async def serve(
        self,
        version: str,
        endpoints: Sequence[rpc.Endpoint[Any]] = (),
        metadata: dict[str, str] | None = None,
    ) -> Service:
        service = await rpc.serve(
            self.nc,
            name=self.service,
            version=version,
            node=self.node,
            endpoints=endpoints,
            metadata=metadata,
        )
        self._services.append(service)
        return service

    async def request(self, node: str, command: Command, reply_type: type[R], *, timeout: float = 10.0) -> R:
        return await rpc.request(self.nc, node, command, reply_type, timeout=timeout)

    async def kv(self, bucket: str) -> KeyValue:
        try:
            return await self.js.key_value(bucket)
        except BucketNotFoundError:
            raise BusError(f"KV bucket {bucket} does not exist: {topology.NOT_BOOTSTRAPPED}") from None

    async def close(self) -> None:
        """Stop consuming, unregister services, then drain so that in-flight acks reach the server."""
        self.link.closing = True
        await asyncio.gather(*(consumer.stop() for consumer in self._consumers))
        for service in self._services:
            try:
                await service.stop()
            except ConnectionClosedError:  # the server closed the connection: there is nothing to unregister
                log.debug("service %s not unregistered: the connection is closed", self.service)
        if not self.nc.is_closed:
            try:
                await self.nc.drain()
            except Exception as exc:
                log.warning("drain failed; closing", extra={"error": repr(exc)})
                await self.nc.close()
