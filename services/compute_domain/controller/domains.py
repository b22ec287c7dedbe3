"""The ComputeDomain controller at work: it follows the domains (list, then watch) and the nodes'
``ComputeDomainNodeChanged`` events, and writes a domain's status the moment its membership changes.

- Membership is event-sourced: the nodes' events, replayed from the stream at start, are the truth, so a
  restarted controller knows every member without asking any node. Admission (``membership.admit``: one
  clique, a free IMEX slot) follows the stream's order, so every replica decides the same.
- The decision goes to the nodes as the domain's roster in KV (``roster``): members with their slots and
  addresses, and the nodes refused with the reason.
- Only the leader (``libs.bus.election``, lease prefix ``computedomains.``) writes; every replica follows, so a
  new leader starts from a full view and writes at once.
- A domain gets a finalizer and its workload claim template; a deleted one loses the template, then the
  finalizer. A status is written only when it differs, and a change of Ready/NotReady is also published as
  ``ComputeDomainStatusChanged`` (on the cluster-wide subjects) for anyone who follows domains.
- No polling: NVIDIA's controller rebuilds every status every 2 s; here a status changes within one event.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import uuid
from collections.abc import Callable
from typing import Any

from nats.js import api
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from libs.bus import Bus
from libs.bus.topology import COMPUTEDOMAIN_BUCKET, stream_of
from libs.events import CLUSTER, decode
from libs.events.catalogue.computedomains import ComputeDomainNodeChanged, ComputeDomainStatusChanged
from libs.kube import AlreadyExists, Conflict, KubeApi, KubeError, NotFound, kube_time
from libs.kube.follow import follow
from libs.kube.resources import EVENTS, Resource, custom_resource
from services.compute_domain.api import (
    FINALIZER,
    GROUP,
    KIND,
    VERSION,
    ApiObjectError,
    ComputeDomain,
    decode_domain,
    status_object,
)
from services.compute_domain.controller.membership import Refused, admit
from services.compute_domain.controller.render import transition_event, workload_claim_template
from services.compute_domain.controller.status import domain_status, readiness, roster_of
from services.compute_domain.roster import Member, Roster, encode_roster, roster_key

log = logging.getLogger(__name__)

COMPUTE_DOMAINS = custom_resource(GROUP, VERSION, "computedomains", KIND)
CLAIM_TEMPLATES = Resource("resource.k8s.io", "v1", "resourceclaimtemplates", "ResourceClaimTemplate", True)
MEMBER_EVENTS = "gpudra.v1.*.computedomains.nodes"
RETRY_SECONDS = 1.0
CONFLICT_ATTEMPTS = 3
STOP_GRACE = 5.0


def utc_now() -> str:
    return kube_time(dt.datetime.now(dt.UTC))


class Domains:
    def __init__(
        self, bus: Bus, kube: KubeApi, *, now: Callable[[], str] = utc_now, instance: str = "controller"
    ) -> None:
        self._bus = bus
        self.instance = instance
        """This replica's name in the Events it reports (``reportingInstance``)."""
        self._kube = kube
        self._now = now
        self.domains: dict[str, ComputeDomain] = {}
        """Domain UID → the domain as last seen."""
        self.members: dict[str, dict[str, Member]] = {}
        """Domain UID → node → its member entry, from the nodes' events."""
        self.refused: dict[str, dict[str, str]] = {}
        """Domain UID → node → why it was not admitted."""
        self._rosters: KeyValue | None = None
        self._written: dict[str, Roster] = {}
        self.leading = False
        self.changed = asyncio.Condition()
        """Notified after each input is taken in (a domain, a member event): what tests and probes wait on."""
        self._dirty: set[str] = set()
        self._settling: dict[str, asyncio.Task[None]] = {}
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Replays the membership, then follows domains and events in the background."""
        self._rosters = await self._bus.kv(COMPUTEDOMAIN_BUCKET)
        subscription = await self._bus.js.subscribe(
            MEMBER_EVENTS,
            stream=stream_of(ComputeDomainNodeChanged),
            ordered_consumer=True,
            deliver_policy=api.DeliverPolicy.ALL,
            cb=self._member_message,
        )
        self._tasks = [
            asyncio.create_task(follow(self._kube, COMPUTE_DOMAINS, self._domain_changed), name="domains"),
            asyncio.create_task(self._until_cancelled(subscription), name="domain members"),
        ]

    async def stop(self) -> None:
        """Cancels the follows and settles, waiting at most ``STOP_GRACE`` for them: a cancelled Kubernetes watch
        sometimes stays parked in its HTTP stream (seen with aiohttp 3.14), and stopping must not hang on it."""
        tasks = [*self._tasks, *self._settling.values()]
        for task in tasks:
            task.cancel()
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=STOP_GRACE)
        if pending:
            names = ", ".join(sorted(task.get_name() for task in pending))
            log.warning("compute-domain controller stopped with tasks still ending: %s", names)

    @staticmethod
    async def _until_cancelled(subscription: Any) -> None:
        try:
            await asyncio.Event().wait()
        finally:
            await subscription.unsubscribe()

    async def lead(self, leading: bool) -> None:
        """Leadership changed: a new leader brings every domain up to date."""
        self.leading = leading
        self._written.clear()  # another leader may have written meanwhile: write each roster once anew
        if leading:
            for uid in list(self.domains):
                await self._settle(uid)

    # --- inputs ---------------------------------------------------------------------------------------------

    async def _member_message(self, msg: Any) -> None:
        try:
            event = decode(msg.headers, msg.data).data
        except ValueError as exc:
            log.warning("unreadable compute-domain membership event: %s", exc, extra={"subject": msg.subject})
            return
        if isinstance(event, ComputeDomainNodeChanged):
            self.apply_member(event)
            self._request(event.domain_uid)  # not awaited: the next events are taken in meanwhile

    def apply_member(self, event: ComputeDomainNodeChanged) -> None:
        """Admits, updates or drops the node (a node's own ``index`` is ignored: the slot is the controller's)."""
        members = self.members.setdefault(event.domain_uid, {})
        refused = self.refused.setdefault(event.domain_uid, {})
        refused.pop(event.node, None)
        if not event.member:
            members.pop(event.node, None)
            return
        try:
            index = admit(event.node, event.clique_id, members)
        except Refused as exc:
            refused[event.node] = str(exc)
            return
        members[event.node] = Member(
            node=event.node,
            ip_address=event.ip_address,
            clique_id=event.clique_id,
            index=index,
            ready=event.status == "Ready",
            reason=event.reason,
        )

    async def _domain_changed(self, kind: str, obj: dict[str, Any]) -> None:
        try:
            domain = decode_domain(obj)
        except ApiObjectError as exc:
            log.error("%s", exc)
            return
        uid = domain.metadata.uid
        if kind == "DELETED":
            self.domains.pop(uid, None)
            self.members.pop(uid, None)
            self.refused.pop(uid, None)
            if self.leading:
                await self._drop_roster(uid)
        else:
            self.domains[uid] = domain
        await self._settle(uid)

    # --- the leader's writes ------------------------------------------------------------------------------

    async def until(self, check: Callable[[], bool], timeout: float) -> None:
        async with asyncio.timeout(timeout), self.changed:
            await self.changed.wait_for(check)

    async def _settle(self, uid: str) -> None:
        await self._request(uid)

    def _request(self, uid: str) -> asyncio.Task[None]:
        """One settling task per domain, which settles again while inputs arrived during a write: a burst of
        events (18 trays joining) becomes a few writes of the latest state, not one write per event."""
        self._dirty.add(uid)
        task = self._settling.get(uid)
        if task is None or task.done():
            task = self._settling[uid] = asyncio.create_task(self._settle_until_clean(uid), name=f"settle {uid}")
        return task

    async def _settle_until_clean(self, uid: str) -> None:
        while uid in self._dirty:
            self._dirty.discard(uid)
            await self._settle_once(uid)
        self._settling.pop(uid, None)

    async def _settle_once(self, uid: str) -> None:
        domain = self.domains.get(uid) if self.leading else None
        try:
            for _ in range(CONFLICT_ATTEMPTS):
                try:
                    await self._settle_one(domain)
                    break
                except Conflict:  # the watch had not caught up with a write (ours or another's)
                    domain = await self._fresh(domain)
        except NotFound:
            log.debug("%s: gone while being settled; its deletion event settles the rest", domain)
        except Exception as exc:
            log.warning("%s: not settled; again in %gs: %s", domain, RETRY_SECONDS, exc, extra={"domain": uid})
            asyncio.get_running_loop().call_later(RETRY_SECONDS, self._request, uid)
        async with self.changed:
            self.changed.notify_all()

    async def _settle_one(self, domain: ComputeDomain | None) -> None:
        if domain is not None and domain.metadata.deletion_timestamp:
            await self._finalize(domain)
        elif domain is not None:
            domain = await self._own(domain)
            await self._write_status(domain)
            await self._write_roster(domain)

    async def _fresh(self, domain: ComputeDomain | None) -> ComputeDomain | None:
        if domain is None:
            return None
        meta = domain.metadata
        try:
            fresh = decode_domain(await self._kube.get(COMPUTE_DOMAINS, meta.name, meta.namespace))
        except NotFound:
            self.domains.pop(meta.uid, None)
            return None
        self.domains[meta.uid] = fresh
        return fresh

    async def _own(self, domain: ComputeDomain) -> ComputeDomain:
        """The domain with the finalizer, and its claim template there."""
        meta = domain.metadata
        if FINALIZER not in meta.finalizers:
            updated = await self._set_finalizers(domain, [*meta.finalizers, FINALIZER])
            domain = self.domains[meta.uid] = decode_domain(updated)
        template = workload_claim_template(domain)
        with contextlib.suppress(AlreadyExists):
            await self._kube.create(CLAIM_TEMPLATES, template)
            log.info("%s: claim template %s created", domain, template["metadata"]["name"])
        return domain

    async def _write_status(self, domain: ComputeDomain) -> None:
        meta = domain.metadata
        members = list(self.members.get(meta.uid, {}).values())
        status = domain_status(domain.spec, members, domain.status, now=self._now(), generation=meta.generation)
        if status == domain.status:
            return
        obj = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": KIND,
            "metadata": {"name": meta.name, "namespace": meta.namespace, "resourceVersion": meta.resource_version},
            "status": status_object(status),
        }
        updated = await self._kube.update_status(COMPUTE_DOMAINS, obj)
        self.domains[meta.uid] = decode_domain(updated)
        if status.status != domain.status.status or not domain.status.conditions:
            await self._announce(domain, members)

    async def _write_roster(self, domain: ComputeDomain) -> None:
        uid = domain.metadata.uid
        members = list(self.members.get(uid, {}).values())
        roster = roster_of(domain, members, self.refused.get(uid, {}))
        if self._written.get(uid) == roster or self._rosters is None:
            return
        await self._rosters.put(roster_key(uid), encode_roster(roster))
        self._written[uid] = roster

    async def _drop_roster(self, uid: str) -> None:
        self._written.pop(uid, None)
        if self._rosters is not None:
            with contextlib.suppress(KeyNotFoundError):
                await self._rosters.delete(roster_key(uid))

    async def _announce(self, domain: ComputeDomain, members: list[Member]) -> None:
        state, why, message = readiness(domain.spec, members)
        reason = message if state == "NotReady" else ""
        event = ComputeDomainStatusChanged(
            node=CLUSTER,
            namespace=domain.metadata.namespace,
            name=domain.metadata.name,
            uid=domain.metadata.uid,
            status=state,
            ready_nodes=sum(1 for member in members if member.ready),
            num_nodes=domain.spec.num_nodes,
            reason=reason,
        )
        await self._bus.publish(event)
        log.info("%s: %s %s", domain, state, reason, extra={"domain": domain.metadata.uid})
        await self._record(domain, ready=state == "Ready", reason=why, message=message)

    async def _record(self, domain: ComputeDomain, *, ready: bool, reason: str, message: str) -> None:
        """The same transition as a Kubernetes Event; one that cannot be written is logged, not retried (the
        status and the CloudEvent carry it already)."""
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        obj = transition_event(
            domain, ready=ready, reason=reason, message=message, now=now, instance=self.instance,
            suffix=uuid.uuid4().hex[:16],
        )  # fmt: skip
        try:
            await self._kube.create(EVENTS, obj)
        except KubeError as exc:
            log.warning("%s: Kubernetes Event not written: %s", domain, exc, extra={"domain": domain.metadata.uid})

    async def _finalize(self, domain: ComputeDomain) -> None:
        meta = domain.metadata
        with contextlib.suppress(NotFound):
            name = domain.spec.channel.resource_claim_template.name
            await self._kube.delete(CLAIM_TEMPLATES, name, meta.namespace)
        if FINALIZER in meta.finalizers:
            with contextlib.suppress(NotFound):
                await self._set_finalizers(domain, [f for f in meta.finalizers if f != FINALIZER])
        await self._drop_roster(meta.uid)
        log.info("%s: finalized", domain, extra={"domain": meta.uid})

    async def _set_finalizers(self, domain: ComputeDomain, finalizers: list[str]) -> dict[str, Any]:
        """A conditional merge patch: a domain changed meanwhile is settled again at its next event."""
        meta = domain.metadata
        patch = {"metadata": {"finalizers": finalizers, "resourceVersion": meta.resource_version}}
        return await self._kube.patch(COMPUTE_DOMAINS, meta.name, patch, meta.namespace)
