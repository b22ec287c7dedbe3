"""The NATS bus: typed events on JetStream, durable consumers, commands on ``nats.micro``."""

from libs.bus.bus import Bus
from libs.bus.connection import parse_servers
from libs.bus.consumer import Consumer, ConsumerSpec, Handler
from libs.bus.errors import (
    BusError,
    CommandError,
    PayloadTooLarge,
    PermanentError,
    RetryableError,
    ServiceTimeout,
    ServiceUnavailable,
)
from libs.bus.rpc import Endpoint

__all__ = [
    "Bus",
    "BusError",
    "CommandError",
    "Consumer",
    "ConsumerSpec",
    "Endpoint",
    "Handler",
    "PayloadTooLarge",
    "PermanentError",
    "RetryableError",
    "ServiceTimeout",
    "ServiceUnavailable",
    "parse_servers",
]
