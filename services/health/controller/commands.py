"""What a person can ask the controller (``gpudra health ...``), served on the cluster-wide subjects
``gpudra.v1._cluster.rpc.remediation.*``: any replica answers (a queue group), and the work goes through the
node's lane like everything else.

- ``ResetBreaker``: close the circuit breaker, then hand every fault it held back for admission (the faults
  are real until shown otherwise; admitting them may trip the breaker again if there are still too many).
- ``ResetRemediation``: put a device, or the node, back in service (``PersonReset``).
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from libs.bus import CommandError, Endpoint
from libs.events.catalogue.remediation import (
    ResetBreaker,
    ResetBreakerReply,
    ResetRemediation,
    ResetRemediationReply,
)
from libs.events.subjects import node_token
from services.health.controller.admission import BreakerGate
from services.health.controller.books import BookStore, StoredNode
from services.health.controller.cluster_view import ClusterView
from services.health.remediation import AnyInput, PersonReset, record_of

log = logging.getLogger(__name__)


class Operated(Protocol):
    """What the commands use of the controller (which holds them: a protocol, not an import of it)."""

    gate: BreakerGate
    store: BookStore
    view: ClusterView

    async def release_held(self, node: str) -> int: ...

    async def submit(self, node: str, given: AnyInput) -> None: ...

    def current(self, node: str) -> StoredNode: ...


class Commands:
    def __init__(self, controller: Operated) -> None:
        self._controller = controller

    def endpoints(self) -> list[Endpoint[Any]]:
        return [Endpoint(ResetBreaker, self.reset_breaker), Endpoint(ResetRemediation, self.reset)]

    async def reset_breaker(self, command: ResetBreaker) -> ResetBreakerReply:
        controller = self._controller
        breaker = await controller.gate.reset(command.by or "a person")
        released = 0
        for node, versioned in await controller.store.all():
            if versioned.stored.held:
                released += await controller.release_held(node)
        log.warning("held faults handed back for admission", extra={"released": released})
        breaker = await controller.gate.current()
        return ResetBreakerReply(state=breaker.state, reason=breaker.reason, released=released)

    async def reset(self, command: ResetRemediation) -> ResetRemediationReply:
        try:
            node_token(command.node)
        except ValueError as exc:
            raise CommandError(400, str(exc)) from None
        controller = self._controller
        if command.node not in await controller.store.nodes():
            raise CommandError(404, f"node {command.node} has no remediation record")
        _check_device(command.node, command.device, controller)
        by = command.by or "a person"
        await controller.submit(command.node, PersonReset(device=command.device, by=by, note=command.note))
        record = record_of(controller.current(command.node).book, command.device)
        state = record.state if record is not None else "healthy"
        log.warning("reset by a person: %s", state, extra={"node": command.node, "device": command.device, "by": by})
        return ResetRemediationReply(node=command.node, device=command.device, state=state)


def _check_device(node: str, device: str, controller: Operated) -> None:
    """A device the node does not have is a mistake to refuse, not a device to call healthy."""
    if not device or record_of(controller.current(node).book, device) is not None:
        return
    known = controller.view.inventory.get(node, ())
    if device not in known:
        raise CommandError(404, f"node {node} has no device {device} (its devices: {', '.join(known) or 'none known'})")
