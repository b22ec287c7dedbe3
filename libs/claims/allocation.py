"""The claim as the kubelet names it and as the API server has it: checks and one driver's share, pure.

The kubelet sends only namespace, name and UID; the UID also becomes a file name here (checkpoint record, CDI
spec), so a path-like UID is refused at the door. The ResourceClaim read from the API must have the same UID
(a claim deleted and recreated under the same name is another claim), be allocated, to this node, and hold
results for this driver; only those results and this driver's opaque configs are kept.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from libs.claims.configapi.quantity import QuantityError, parse_quantity
from libs.claims.problems import BadClaimRef, ClaimNotFound, ClaimNotUsable
from libs.events.catalogue import ClaimRef
from libs.events.catalogue.claims import uid_problem


def check_uid(uid: str) -> str:
    """The UID, if it can safely name files; else ``BadClaimRef`` saying why."""
    problem = uid_problem(uid)
    if problem:
        raise BadClaimRef(problem)
    return uid


def check_ref(ref: ClaimRef) -> ClaimRef:
    """A claim the API can be asked about: a safe UID, a namespace and a name."""
    check_uid(ref.uid)
    if not ref.namespace or not ref.name:
        raise BadClaimRef("the claim's namespace and name are needed to read it from the API server")
    return ref


# --- the parts of resource.k8s.io/v1 ResourceClaim status read here ---------------------------------------


class _Opaque(msgspec.Struct, frozen=True, kw_only=True):
    driver: str
    parameters: Any = None


class _Config(msgspec.Struct, frozen=True, kw_only=True):
    source: str = "FromClaim"
    requests: list[str] = []
    opaque: _Opaque | None = None


class _Result(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    request: str
    driver: str
    pool: str
    device: str
    admin_access: bool | None = None
    share_id: str | None = msgspec.field(default=None, name="shareID")
    consumed_capacity: dict[str, str | int] | None = None


class _Devices(msgspec.Struct, frozen=True, kw_only=True):
    results: list[_Result] = []
    config: list[_Config] = []


class _Requirement(msgspec.Struct, frozen=True, kw_only=True):
    key: str
    operator: str
    values: list[str] = []


class _Term(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    match_fields: list[_Requirement] = []
    match_expressions: list[_Requirement] = []


class _NodeSelector(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    node_selector_terms: list[_Term] = []


class _Allocation(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    devices: _Devices = _Devices()
    node_selector: _NodeSelector | None = None


class _Status(msgspec.Struct, frozen=True, kw_only=True):
    allocation: _Allocation | None = None


# --- what the rest of the service works with --------------------------------------------------------------


class AllocationResult(msgspec.Struct, frozen=True, kw_only=True):
    """One allocated device of this driver."""

    request: str
    pool: str
    device: str
    admin_access: bool = False
    share_id: str | None = None
    consumed: dict[str, int] = {}
    """A share's ``consumedCapacity`` (KEP-5075), as whole numbers; empty for a device allocated whole."""

    @property
    def request_name(self) -> str:
        """The request as the kubelet reports it: a subrequest ``req/sub`` counts as ``req``."""
        return self.request.split("/", 1)[0]


class ConfigEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One opaque config of this driver, in the allocation's order (class configs first, as the API keeps them)."""

    index: int
    source: Literal["FromClass", "FromClaim"]
    requests: tuple[str, ...]
    parameters: Any

    def applies_to(self, result: AllocationResult) -> bool:
        """An entry naming no requests applies to all; ``req`` also covers its subrequests ``req/sub``."""
        return not self.requests or result.request in self.requests or result.request_name in self.requests

    def describe(self) -> str:
        requests = ", ".join(self.requests) if self.requests else "all requests"
        return f"opaque config #{self.index} ({self.source}, {requests})"


class AllocatedClaim(msgspec.Struct, frozen=True, kw_only=True):
    ref: ClaimRef
    results: tuple[AllocationResult, ...]
    configs: tuple[ConfigEntry, ...]


def read_allocation(obj: dict[str, Any], ref: ClaimRef, *, driver: str, node: str) -> AllocatedClaim:
    """This driver's devices and configs of the claim ``obj``, after checking it is the claim the kubelet meant."""
    uid = str((obj.get("metadata") or {}).get("uid") or "")
    if uid != ref.uid:
        raise ClaimNotFound(
            f"the API server's ResourceClaim {ref.namespace}/{ref.name} has uid {uid or '(none)'}: "
            "the claim the kubelet means was deleted (and maybe recreated under the same name)"
        )
    try:
        status = msgspec.convert(obj.get("status") or {}, _Status)
    except msgspec.ValidationError as exc:
        raise ClaimNotUsable(f"its status cannot be read: {exc}") from None
    allocation = status.allocation
    if allocation is None:
        raise ClaimNotUsable("it is not allocated (status.allocation is empty)")
    _check_node(allocation.node_selector, node)
    results = _results(allocation.devices.results, driver=driver, node=node)
    configs = tuple(
        ConfigEntry(
            index=index,
            source="FromClass" if entry.source == "FromClass" else "FromClaim",
            requests=tuple(entry.requests),
            parameters=entry.opaque.parameters,
        )
        for index, entry in enumerate(allocation.devices.config)
        if entry.opaque is not None and entry.opaque.driver == driver
    )
    return AllocatedClaim(ref=ref, results=results, configs=configs)


def pinned_to(node: str) -> dict[str, Any]:
    """An allocation's ``nodeSelector`` as the scheduler writes it for a node-local pool: the node, by name
    (what ``allocated_nodes`` reads back)."""
    return {"nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}]}


def allocated_nodes(selector: _NodeSelector | None) -> set[str] | None:
    """The node names a node selector pins by ``metadata.name``; None when it does not pin any."""
    if selector is None:
        return None
    names: set[str] = set()
    pinned = False
    for term in selector.node_selector_terms:
        for requirement in term.match_fields:
            if requirement.key == "metadata.name" and requirement.operator == "In":
                pinned = True
                names.update(requirement.values)
    return names if pinned else None


def _check_node(selector: _NodeSelector | None, node: str) -> None:
    nodes = allocated_nodes(selector)
    if nodes is not None and node not in nodes:
        raise ClaimNotUsable(f"it is allocated to node {', '.join(sorted(nodes))}, not to this node {node}")


def _results(results: list[_Result], *, driver: str, node: str) -> tuple[AllocationResult, ...]:
    if not results:
        raise ClaimNotUsable("its allocation holds no devices")
    ours = [result for result in results if result.driver == driver]
    if not ours:
        others = ", ".join(sorted({result.driver for result in results}))
        raise ClaimNotUsable(f"it is allocated to driver {others}, not to {driver}")
    for result in ours:
        if result.pool != node:
            raise ClaimNotUsable(
                f"device {result.pool}/{result.device} is in pool {result.pool}, not in this node's pool {node}"
            )
    return tuple(
        AllocationResult(
            request=result.request,
            pool=result.pool,
            device=result.device,
            admin_access=bool(result.admin_access),
            share_id=result.share_id,
            consumed=_consumed(result),
        )
        for result in ours
    )


def _consumed(result: _Result) -> dict[str, int]:
    """A share's consumption; a share without one cannot be enforced, and a scheduler always writes it."""
    if not result.share_id:
        return {}
    if not result.consumed_capacity:
        raise ClaimNotUsable(
            f"device {result.device} is a share (shareID {result.share_id}) without consumedCapacity: "
            "what it may use is unknown"
        )
    consumed = {}
    for name, amount in result.consumed_capacity.items():
        try:
            consumed[name] = parse_quantity(amount)
        except QuantityError as exc:
            raise ClaimNotUsable(f"device {result.device} consumedCapacity.{name}: {exc}") from None
    return consumed
