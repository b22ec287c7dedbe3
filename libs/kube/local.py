"""The standalone adapter: the Kubernetes port served from a JetStream KV bucket that every process shares.

Without a cluster, the services and the ``gpudra`` CLI still need one "API server" they all see. The bucket is
it: one key per object (``<resource>.<namespace or _>.<name>``), the JSON object as value, and the entry's
revision as ``metadata.resourceVersion``. Writes are compare-and-set on the key's last revision (the KV
``update(key, value, last=revision)`` primitive, sent as the same JetStream header), so optimistic concurrency
works across processes exactly as it does against kube-apiserver. Lists read the last value per key; watches
replay the bucket's stream from a revision.

Each message also carries a ``Gpudra-Kube-Event`` header (ADDED/MODIFIED/DELETED), and a delete's tombstone
carries the final object, so a watcher gets the event types and DELETED objects a cluster would send.
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import TypeVar

import msgspec
import nats.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api
from nats.js.errors import APIError, BucketNotFoundError, KeyNotFoundError
from nats.js.kv import KeyValue

from libs.bus.topology import KUBE_BUCKET, NOT_BOOTSTRAPPED
from libs.kube.backoff import Backoff
from libs.kube.errors import AlreadyExists, BadRequest, Conflict, KubeError, NotFound, Unavailable
from libs.kube.object_rules import (
    STALE,
    check_precondition,
    deletion_finished,
    marked_deleting,
    merge_patch,
    new_object,
    now,
    replaced_object,
    status_replaced,
    stored_form,
    versioned,
)
from libs.kube.port import EventType, ObjectList, WatchEvent
from libs.kube.resources import PODS, Obj, Resource, check_object
from libs.kube.selectors import Selector, check_fields, selected

T = TypeVar("T")
log = logging.getLogger(__name__)

EVENT_HEADER = "Gpudra-Kube-Event"
KV_OPERATION = "KV-Operation"
WRONG_LAST_SEQUENCE = (10071, 10164)  # JetStream: the key's last revision is not the one expected
_WRITE_ATTEMPTS = 16  # unconditional writes retry internally, as kube-apiserver's GuaranteedUpdate does
_WRITE_BACKOFF = Backoff(base=0.002, cap=0.05)
_WATCH_INACTIVE = 60.0
Messages = list[Msg]  # an alias: inside LocalKube, ``list`` is the method


# --- keys ---------------------------------------------------------------------------------------------------


def resource_token(resource: Resource) -> str:
    """One key token per group/resource: ``pods``, ``resourceslices_resource_k8s_io``.

    Dots would split the token; group names are DNS subdomains (no ``_``), so ``_`` keeps it unambiguous.
    Versions share storage, as they do in kube-apiserver.
    """
    return resource.plural if not resource.group else f"{resource.plural}_{resource.group.replace('.', '_')}"


def object_key(resource: Resource, namespace: str | None, name: str) -> str:
    """``<resource>.<namespace or _>.<name>``; a name's dots become further tokens, always the last ones."""
    return f"{resource_token(resource)}.{namespace or '_'}.{name}"


def key_filter(resource: Resource, namespace: str | None) -> str:
    return (
        f"{resource_token(resource)}.{namespace or '*'}.>" if resource.namespaced else f"{resource_token(resource)}._.>"
    )


def split_key(key: str) -> tuple[str | None, str]:
    """(namespace, name) of a key: the first two tokens carry no dots, the name is everything after."""
    _, namespace, name = key.split(".", 2)
    return (None if namespace == "_" else namespace), name


# --- watch selection ----------------------------------------------------------------------------------------


@dataclass
class Selection:
    """Which objects a filtered watch has reported as present, to turn changes into ADDED/MODIFIED/DELETED.

    A cluster compares each change with the object's previous state; here the watch remembers the keys it
    reported instead. ``complete`` is True when the watch began with a full list, so an unknown key that now
    matches has entered the selection (ADDED) rather than being an older object (MODIFIED).
    """

    complete: bool
    present: set[str] = field(default_factory=set)

    def classify(self, key: str, op: EventType, matches: bool) -> EventType | None:
        if op == "DELETED":
            if key in self.present or (matches and not self.complete):
                self.present.discard(key)
                return "DELETED"
            return None
        if not matches:
            if key in self.present:
                self.present.discard(key)
                return "DELETED"
            return None
        known = key in self.present
        self.present.add(key)
        if op == "ADDED" or (not known and self.complete):
            return "ADDED"
        return "MODIFIED"


# --- the adapter ---------------------------------------------------------------------------------------------


class _WrongLast(Exception):
    """The key moved on between our read and our write."""


class LocalKube:
    """``KubeApi`` over the ``gpudra_kube`` KV bucket (created by ``libs.bus.topology.bootstrap``)."""

    def __init__(self, js: JetStreamContext, kv: KeyValue, bucket: str = KUBE_BUCKET) -> None:
        self._js = js
        self._kv = kv
        self._stream = f"KV_{bucket}"
        self._prefix = f"$KV.{bucket}."

    @classmethod
    async def open(cls, js: JetStreamContext, bucket: str = KUBE_BUCKET) -> LocalKube:
        try:
            kv = await js.key_value(bucket)
        except BucketNotFoundError:
            raise KubeError("standalone store", f"KV bucket {bucket} does not exist: {NOT_BOOTSTRAPPED}") from None
        return cls(js, kv, bucket)

    async def close(self) -> None:
        """The bus belongs to the caller; nothing to release here."""

    # --- reads ------------------------------------------------------------------------------------------

    async def get(self, resource: Resource, name: str, namespace: str | None = None) -> Obj:
        _, current = await self._read(object_key(resource, namespace, name))
        if current is None:
            raise NotFound(resource.describe(name, namespace), f'{resource.qualified} "{name}" not found')
        return current

    async def list(
        self,
        resource: Resource,
        namespace: str | None = None,
        *,
        fields: Selector | None = None,
        labels: Selector | None = None,
    ) -> ObjectList:
        check_fields(resource, fields)
        messages, revision = await self._snapshot(key_filter(resource, namespace))
        items = [obj for _, op, obj in self._decoded(resource, messages) if op != "DELETED"]
        items = [obj for obj in items if selected(obj, fields, labels)]
        items.sort(key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))
        return ObjectList(items=items, resource_version=str(revision))

    # --- writes -----------------------------------------------------------------------------------------

    async def create(self, resource: Resource, obj: Obj) -> Obj:
        name, namespace = check_object(resource, obj)
        what = resource.describe(name, namespace)
        stored = new_object(resource, obj, uid=str(uuid.uuid4()), created=now())
        key = object_key(resource, namespace, name)
        revision, current = await self._read(key)
        exists = AlreadyExists(what, f'{resource.qualified} "{name}" already exists', reason="AlreadyExists")
        if current is not None:
            raise exists
        try:
            return versioned(stored, await self._publish(key, stored, last=revision, event="ADDED"))
        except _WrongLast:
            raise exists from None

    async def update(self, resource: Resource, obj: Obj) -> Obj:
        name, namespace = check_object(resource, obj)
        what = resource.describe(name, namespace)

        def change(current: Obj) -> Obj:
            check_precondition(resource, current, obj, what)
            return replaced_object(resource, current, obj)

        return await self._modify(resource, name, namespace, change, conditional=_has_version(obj))

    async def update_status(self, resource: Resource, obj: Obj) -> Obj:
        name, namespace = check_object(resource, obj)
        what = resource.describe(name, namespace)
        if not resource.status_subresource:
            raise NotFound(what, f"{resource.qualified} has no status subresource")

        def change(current: Obj) -> Obj:
            check_precondition(resource, current, obj, what)
            return status_replaced(current, obj)

        return await self._modify(resource, name, namespace, change, conditional=_has_version(obj))

    async def patch(self, resource: Resource, name: str, patch: Obj, namespace: str | None = None) -> Obj:
        what = resource.describe(name, namespace)

        def change(current: Obj) -> Obj:
            patched = merge_patch(current, patch)
            if check_object(resource, patched) != (name, namespace):
                raise BadRequest(what, "a patch cannot change metadata.name or metadata.namespace")
            check_precondition(resource, current, patched, what)
            return replaced_object(resource, current, patched)

        return await self._modify(resource, name, namespace, change, conditional=_has_version(patch))

    async def delete(
        self, resource: Resource, name: str, namespace: str | None = None, *, resource_version: str | None = None
    ) -> None:
        what = resource.describe(name, namespace)
        key = object_key(resource, namespace, name)

        async def remove(revision: int, current: Obj) -> None:
            if resource_version and resource_version != str(revision):
                raise Conflict(
                    what,
                    f"Precondition failed: ResourceVersion in precondition: {resource_version}, "
                    f"ResourceVersion in object meta: {revision}",
                    reason="Conflict",
                )
            await self._remove_or_mark(key, current, revision)

        await self._compare_and_set(resource, name, namespace, remove, conditional=bool(resource_version))

    async def evict(self, name: str, namespace: str, *, grace_period_seconds: int | None = None) -> None:
        """No PodDisruptionBudgets exist without a cluster: eviction is deletion. Nor does a kubelet stop the
        pod's containers, so there is nothing a grace period could give time to: the pod goes at once."""
        await self.delete(PODS, name, namespace)

    # --- watch ------------------------------------------------------------------------------------------

    async def watch(
        self,
        resource: Resource,
        namespace: str | None = None,
        *,
        fields: Selector | None = None,
        labels: Selector | None = None,
        resource_version: str | None = None,
    ) -> AsyncGenerator[WatchEvent, None]:
        selection = Selection(complete=resource_version is None)
        if resource_version is None:
            listed = await self.list(resource, namespace, fields=fields, labels=labels)
            for item in listed.items:
                selection.present.add(object_key(resource, item["metadata"].get("namespace"), item["metadata"]["name"]))
                yield WatchEvent("ADDED", item)
            resource_version = listed.resource_version
        check_fields(resource, fields)
        follow = self._follow(
            resource, namespace, fields=fields, labels=labels, resource_version=resource_version, selection=selection
        )
        async with aclosing(follow) as events:
            async for event in events:
                yield event

    async def _follow(
        self,
        resource: Resource,
        namespace: str | None,
        *,
        fields: Selector | None,
        labels: Selector | None,
        resource_version: str,
        selection: Selection,
    ) -> AsyncGenerator[WatchEvent, None]:
        if not resource_version.isdigit():
            raise BadRequest(resource.kind, f"invalid resource version: {resource_version}")
        config = api.ConsumerConfig(
            deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=int(resource_version) + 1
        )
        sub = await self._subscribe(key_filter(resource, namespace), config)
        try:
            while True:
                msg = await _next(sub, None)
                for key, op, obj in self._decoded(resource, [msg]):
                    kind = selection.classify(key, op, selected(obj, fields, labels))
                    if kind is not None:
                        yield WatchEvent(kind, obj)
        finally:
            await _unsubscribe(sub)

    # --- storage ----------------------------------------------------------------------------------------

    async def _read(self, key: str) -> tuple[int, Obj | None]:
        """(revision, object); a missing key is revision 0, a deleted one its tombstone's revision."""
        try:
            entry = await self._kv.get(key)
        except KeyNotFoundError as exc:
            return (exc.entry.revision or 0) if exc.entry is not None else 0, None
        except (nats.errors.Error, APIError) as exc:
            raise Unavailable("standalone store", f"reading {key}: {exc!r}") from exc
        return entry.revision or 0, versioned(msgspec.json.decode(entry.value or b"{}"), entry.revision or 0)

    async def _modify(
        self, resource: Resource, name: str, namespace: str | None, change: Callable[[Obj], Obj], *, conditional: bool
    ) -> Obj:
        key = object_key(resource, namespace, name)

        async def write(revision: int, current: Obj) -> Obj:
            new = change(current)
            if new == stored_form(current):
                return current  # a no-op write changes nothing, not even the resourceVersion
            if deletion_finished(new):
                return versioned(new, await self._tombstone(key, new, last=revision))
            return versioned(new, await self._publish(key, new, last=revision, event="MODIFIED"))

        return await self._compare_and_set(resource, name, namespace, write, conditional=conditional)

    async def _compare_and_set(
        self,
        resource: Resource,
        name: str,
        namespace: str | None,
        step: Callable[[int, Obj], Awaitable[T]],
        *,
        conditional: bool,
    ) -> T:
        """Read, then ``step`` writes only if nobody wrote in between: a change made against a resourceVersion
        the caller gave fails with a Conflict, any other retries on a fresh read."""
        what = resource.describe(name, namespace)
        key = object_key(resource, namespace, name)
        for attempt in range(_WRITE_ATTEMPTS):
            await _pause(attempt)
            revision, current = await self._read(key)
            if current is None:
                raise NotFound(what, f'{resource.qualified} "{name}" not found')
            try:
                return await step(revision, current)
            except _WrongLast:
                if conditional:
                    raise Conflict(what, STALE, reason="Conflict") from None
        raise Conflict(what, "too many concurrent writers; try again", reason="Conflict")

    async def _remove_or_mark(self, key: str, current: Obj, revision: int) -> None:
        """Finalizers keep an object (marked deleting) until their controllers remove them."""
        if not current["metadata"].get("finalizers"):
            await self._tombstone(key, stored_form(current), last=revision)
        elif not current["metadata"].get("deletionTimestamp"):
            await self._publish(key, marked_deleting(current, now()), last=revision, event="MODIFIED")

    async def _publish(
        self, key: str, stored: Obj, *, last: int, event: EventType, headers: dict[str, str] | None = None
    ) -> int:
        all_headers = {api.Header.EXPECTED_LAST_SUBJECT_SEQUENCE: str(last), EVENT_HEADER: event, **(headers or {})}
        try:
            ack = await self._js.publish(self._prefix + key, msgspec.json.encode(stored), headers=all_headers)
        except APIError as exc:
            if exc.err_code in WRONG_LAST_SEQUENCE:
                raise _WrongLast from None
            raise Unavailable("standalone store", f"writing {key}: {exc!r}") from exc
        except nats.errors.Error as exc:
            raise Unavailable("standalone store", f"writing {key}: {exc!r}") from exc
        return int(ack.seq)

    async def _tombstone(self, key: str, final: Obj, *, last: int) -> int:
        """A KV delete marker that carries the final object, for the DELETED event watchers receive."""
        return await self._publish(key, final, last=last, event="DELETED", headers={KV_OPERATION: "DEL"})

    async def _snapshot(self, subject_filter: str) -> tuple[Messages, int]:
        """The last message of every key under the filter, and a revision to watch from afterwards.

        The revision is the larger of the stream's last sequence before reading and the newest message read:
        every change under the filter up to it is in the snapshot, and every later one is above it.
        """
        try:
            before = (await self._js.stream_info(self._stream)).state.last_seq
        except (nats.errors.Error, APIError) as exc:
            raise Unavailable("standalone store", f"reading {self._stream}: {exc!r}") from exc
        config = api.ConsumerConfig(deliver_policy=api.DeliverPolicy.LAST_PER_SUBJECT)
        sub = await self._subscribe(subject_filter, config)
        try:
            info = await sub.consumer_info()
            delivered = info.delivered.consumer_seq if info.delivered else 0
            messages: Messages = []
            if info.num_pending or delivered:
                messages.append(await _next(sub, 5.0))
                while messages[-1].metadata.num_pending:
                    messages.append(await _next(sub, 5.0))
        except (nats.errors.Error, APIError) as exc:
            raise Unavailable("standalone store", f"listing {subject_filter}: {exc!r}") from exc
        finally:
            await _unsubscribe(sub)
        return messages, max([before or 0, *(m.metadata.sequence.stream or 0 for m in messages if m.metadata.sequence)])

    async def _subscribe(self, subject_filter: str, config: api.ConsumerConfig) -> JetStreamContext.PushSubscription:
        try:
            return await self._js.subscribe(
                self._prefix + subject_filter,
                stream=self._stream,
                ordered_consumer=True,
                config=config,
                inactive_threshold=_WATCH_INACTIVE,
            )
        except (nats.errors.Error, APIError) as exc:
            raise Unavailable("standalone store", f"reading {subject_filter}: {exc!r}") from exc

    def _decoded(self, resource: Resource, messages: Iterable[Msg]) -> Iterable[tuple[str, EventType, Obj]]:
        for msg in messages:
            key = msg.subject[len(self._prefix) :]
            yield key, _operation(msg), _object_of(resource, key, msg)


async def _pause(attempt: int) -> None:
    """Nothing before the first try; a short jittered pause before each retry, so racing writers spread out."""
    if attempt:
        await asyncio.sleep(_WRITE_BACKOFF.delay(attempt - 1, random.random()))


def _has_version(obj: Obj) -> bool:
    return bool((obj.get("metadata") or {}).get("resourceVersion"))


def _operation(msg: Msg) -> EventType:
    headers = msg.headers or {}
    if headers.get(KV_OPERATION) in ("DEL", "PURGE") or headers.get("Nats-Marker-Reason"):
        return "DELETED"
    return "ADDED" if headers.get(EVENT_HEADER) == "ADDED" else "MODIFIED"


def _object_of(resource: Resource, key: str, msg: Msg) -> Obj:
    """The stored object at this revision; a bare delete marker (a purge) still names the object."""
    revision = msg.metadata.sequence.stream if msg.metadata.sequence else 0
    if msg.data:
        return versioned(msgspec.json.decode(msg.data), revision or 0)
    namespace, name = split_key(key)
    metadata = {"name": name, "resourceVersion": str(revision)}
    if namespace:
        metadata["namespace"] = namespace
    return {"apiVersion": resource.api_version, "kind": resource.kind, "metadata": metadata}


async def _next(sub: JetStreamContext.PushSubscription, timeout: float | None) -> Msg:
    try:
        return await sub.next_msg(timeout=timeout)
    except nats.errors.TimeoutError as exc:
        raise Unavailable("standalone store", "the KV stream stopped delivering") from exc
    except nats.errors.Error as exc:
        raise Unavailable("standalone store", f"the KV stream failed: {exc!r}") from exc


async def _unsubscribe(sub: JetStreamContext.PushSubscription) -> None:
    try:
        await sub.unsubscribe()
    except nats.errors.Error as exc:  # the connection is closing: the consumer expires on its own
        log.debug("could not unsubscribe a KV reader", extra={"error": repr(exc)})
