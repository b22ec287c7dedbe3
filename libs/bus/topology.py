"""The JetStream streams, KV buckets (and their key layout) and durable consumers gpudra uses.

One role creates or updates the streams and buckets, idempotently: the supervisor in standalone mode, ``gpudra
bus bootstrap`` (the controller's init step) in a cluster. No other service has the JetStream admin rights it
takes (docs/security.md); a service that finds a stream or bucket missing says so and exits. A durable
consumer is created by its owner, the only client allowed to create, fetch from or ack it. Replicas are a setting:
1 standalone, 3 on a NATS cluster. The names and keys here are also what ``libs/trust`` builds permissions from.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Annotated

import msgspec
from nats.js import JetStreamContext, api
from nats.js.errors import BadRequestError

from libs.events import Event
from libs.events.catalogue.health import HealthEvent
from libs.events.subjects import DEADLETTER_ROOT, ROOT, Domain, domain_filter, node_token

log = logging.getLogger(__name__)

DAY = 24 * 3600.0
MAX_EVENT_BYTES = 1024 * 1024
NOT_BOOTSTRAPPED = (
    "the bus has not been bootstrapped (standalone: `gpudra up` does it; cluster: the controller's init step "
    "`gpudra bus bootstrap`)"
)
STREAM_IN_USE = 10058  # JetStream: "stream name already in use with a different configuration"


MIB = 1024 * 1024


def _doc(text: str) -> msgspec.Meta:
    return msgspec.Meta(description=text)


Positive = Annotated[int, msgspec.Meta(ge=1)]


class BusLimits(msgspec.Struct, frozen=True, kw_only=True):
    """How much the bus keeps: what ``gpudra bus bootstrap`` (and ``gpudra up``) configures, from the same
    ``GPUDRA_*`` variables as every other setting. Anyone who may publish could otherwise fill the store."""

    stream_replicas: Annotated[
        int, _doc("JetStream replicas: 1 standalone, 3 on a NATS cluster"), msgspec.Meta(ge=1, le=5)
    ] = 1
    stream_max_bytes: Annotated[Positive, _doc("bytes each event stream keeps (the oldest go first)")] = 1024 * MIB
    stream_max_msgs_per_subject: Annotated[
        Positive, _doc("events each subject (one node, one topic) keeps: a flooding node evicts only its own")
    ] = 100_000
    deadletter_max_bytes: Annotated[Positive, _doc("bytes the dead-letter stream keeps")] = 256 * MIB
    deadletter_max_msgs_per_subject: Annotated[
        Positive, _doc("dead letters kept per consumer; beyond it new ones are dropped, logged and counted")
    ] = 10_000
    bucket_max_bytes: Annotated[Positive, _doc("bytes each KV bucket keeps, history included")] = 256 * MIB


class StreamSpec(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    subjects: list[str]
    max_age: float
    description: str
    deadletters: bool = False


class BucketSpec(msgspec.Struct, frozen=True, kw_only=True):
    bucket: str
    history: int
    ttl: float | None
    description: str


def event_stream(domain: Domain) -> str:
    return f"GPUDRA_{domain.name}"


def stream_of(event: type[Event]) -> str:
    """The stream that stores ``event``: its domain's."""
    return event_stream(Domain(event.domain))


DEADLETTER_STREAM = "GPUDRA_DEADLETTER"

STREAM_AGES: dict[Domain, float] = {
    Domain.INVENTORY: 7 * DAY,
    Domain.CLAIMS: 7 * DAY,
    Domain.HEALTH: 7 * DAY,
    Domain.REMEDIATION: 30 * DAY,
    Domain.COMPUTEDOMAINS: 7 * DAY,
    Domain.SYSTEM: 7 * DAY,
}

STREAMS: tuple[StreamSpec, ...] = (
    *(
        StreamSpec(
            name=event_stream(domain),
            subjects=[domain_filter(domain)],
            max_age=age,
            description=f"gpudra {domain} events",
        )
        for domain, age in STREAM_AGES.items()
    ),
    StreamSpec(
        name=DEADLETTER_STREAM,
        subjects=[f"{DEADLETTER_ROOT}.>"],
        max_age=30 * DAY,
        description="events no consumer could handle, with the reason in gpudra-dlq-* headers",
        deadletters=True,
    ),
)


class DurableSpec(msgspec.Struct, frozen=True, kw_only=True):
    """A durable consumer's identity: only its owner may fetch from it or ack its deliveries."""

    stream: str
    name: str
    filter_subjects: tuple[str, ...]


HEALTH_REMEDIATION = DurableSpec(
    stream=event_stream(Domain.HEALTH),
    name="health-remediation",
    filter_subjects=(f"{ROOT}.*.{HealthEvent.domain}.{HealthEvent.topic}",),
)
"""The remediation controller's intake: every node's ``HealthEvent``, shared by the controller's replicas."""

DURABLES: tuple[DurableSpec, ...] = (HEALTH_REMEDIATION,)

INVENTORY_BUCKET = "gpudra_inventory"
HEALTH_BUCKET = "gpudra_health"
REMEDIATION_BUCKET = "gpudra_remediation"
COMPUTEDOMAIN_BUCKET = "gpudra_computedomains"
LEASE_BUCKET = "gpudra_leases"
KUBE_BUCKET = "gpudra_kube"

BUCKETS: tuple[BucketSpec, ...] = (
    BucketSpec(bucket=INVENTORY_BUCKET, history=5, ttl=None, description="device inventory per node"),
    BucketSpec(bucket=HEALTH_BUCKET, history=5, ttl=None, description="health per device and node"),
    BucketSpec(bucket=REMEDIATION_BUCKET, history=10, ttl=None, description="remediation state machines"),
    BucketSpec(bucket=COMPUTEDOMAIN_BUCKET, history=5, ttl=None, description="compute-domain membership"),
    BucketSpec(bucket=LEASE_BUCKET, history=1, ttl=30.0, description="leader leases (expire unless renewed)"),
    BucketSpec(bucket=KUBE_BUCKET, history=10, ttl=None, description="standalone Kubernetes API objects"),
)


def kv_stream(bucket: str) -> str:
    return f"KV_{bucket}"


# --- key layout ---------------------------------------------------------------------------------------------
# ``node`` may be "*" (a wildcard token) where permissions speak of every node.


def _key_token(node: str) -> str:
    return node if node == "*" else node_token(node)


def inventory_key(node: str) -> str:
    """gpudra_inventory: the node's device inventory, written by its discovery."""
    return _key_token(node)


def taints_key(node: str) -> str:
    """gpudra_health: the node's device taints, written by the remediation controller, read by discovery."""
    return f"{_key_token(node)}.taints"


REMEDIATION_NODE_PREFIX = "nodes."
"""gpudra_remediation: ``nodes.<node token>`` is a node's book, ``breaker`` the circuit breaker."""
BREAKER_KEY = "breaker"
REMEDIATION_LEASE_PREFIX = "remediation."
"""gpudra_leases: ``remediation.leader`` and ``remediation.replicas.<id>``."""
COMPUTEDOMAIN_LEASE_PREFIX = "computedomains."
"""gpudra_leases: the compute-domain controller's leader lease and replicas."""


def _stream_config(spec: StreamSpec, limits: BusLimits) -> api.StreamConfig:
    """Events: the oldest go when a stream or a subject is full, so a flood costs old events, not new ones.
    Dead letters: new ones are refused when a consumer's subject is full (the consumer drops them, logs and
    counts it), so a flood of poison cannot push out the dead letters that are already there."""
    if spec.deadletters:
        bounds = {
            "max_bytes": limits.deadletter_max_bytes,
            "max_msgs_per_subject": limits.deadletter_max_msgs_per_subject,
            "discard": api.DiscardPolicy.NEW,
            "discard_new_per_subject": True,
        }
    else:
        bounds = {
            "max_bytes": limits.stream_max_bytes,
            "max_msgs_per_subject": limits.stream_max_msgs_per_subject,
            "discard": api.DiscardPolicy.OLD,
        }
    return api.StreamConfig(
        name=spec.name,
        description=spec.description,
        subjects=spec.subjects,
        retention=api.RetentionPolicy.LIMITS,
        storage=api.StorageType.FILE,
        max_age=spec.max_age,
        max_msg_size=MAX_EVENT_BYTES,
        duplicate_window=120.0,
        num_replicas=limits.stream_replicas,
        **bounds,  # type: ignore[arg-type]
    )


async def ensure_stream(js: JetStreamContext, config: api.StreamConfig) -> None:
    """Create the stream, or bring an existing one to this configuration."""
    try:
        await js.add_stream(config)
    except BadRequestError as exc:
        if exc.err_code != STREAM_IN_USE:
            raise
        await js.update_stream(config)
        log.info("updated stream configuration", extra={"stream": config.name})


async def bootstrap(js: JetStreamContext, limits: BusLimits) -> None:
    for spec in STREAMS:
        await ensure_stream(js, _stream_config(spec, limits))
    for bucket in BUCKETS:
        await ensure_bucket(js, bucket, limits)


async def ensure_bucket(js: JetStreamContext, spec: BucketSpec, limits: BusLimits) -> None:
    config = api.KeyValueConfig(
        bucket=spec.bucket,
        description=spec.description,
        history=spec.history,
        ttl=spec.ttl,
        replicas=limits.stream_replicas,
        max_bytes=limits.bucket_max_bytes,
        max_value_size=MAX_EVENT_BYTES,
        storage=api.StorageType.FILE,
        # No direct gets: one returns a stored message, headers and all, to whatever reply subject the
        # requester names, which would let a client place its own value on subjects it may not publish to
        # (libs/bus/provenance.py). Reads go through the JetStream API, which wraps the message in JSON.
        direct=False,
    )
    try:
        await js.create_key_value(config)
    except BadRequestError as exc:
        if exc.err_code != STREAM_IN_USE:
            raise
        await _without_direct_gets(js, kv_stream(spec.bucket), limits)


async def _without_direct_gets(js: JetStreamContext, stream: str, limits: BusLimits) -> None:
    """An existing bucket keeps its history and TTL; it gets the current limits and loses direct gets, which
    an older gpudra allowed."""
    config = (await js.stream_info(stream)).config
    wanted = dataclasses.replace(
        config, allow_direct=False, max_bytes=limits.bucket_max_bytes, max_msg_size=MAX_EVENT_BYTES
    )
    if wanted != config:
        await js.update_stream(wanted)
        log.info("bucket limits updated", extra={"stream": stream})
