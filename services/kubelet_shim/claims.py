"""Decisions about the claims of one kubelet call, kept pure so that each rule is a unit test.

The kubelet rejects an answer whose map does not hold exactly the UIDs it asked about (an unknown UID is
an error, a missing one "left out N claims"), and a gRPC error fails every claim of the call, including
the good ones. So every problem, with the kubelet's input or with claim_preparation's answer, becomes a
per-claim error string under the UID the kubelet sent, and the call itself always succeeds.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Protocol, TypeVar

import msgspec

from libs.bus import BusError, CommandError, ServiceTimeout, ServiceUnavailable
from libs.events.catalogue import ClaimRef
from libs.events.catalogue.claims import uid_problem

# Kubernetes UIDs are RFC 4122 UUIDs; anything beyond this alphabet is a bug upstream or an attack, and
# claim_preparation uses the UID in file names (CDI specs, checkpoints).
_SHOWN_UID = 80


class HasError(Protocol):
    @property
    def error(self) -> str: ...


R = TypeVar("R", bound=HasError)


class CheckedClaims(msgspec.Struct, frozen=True, kw_only=True):
    """A kubelet call's claims, sorted into those to forward and those refused at the door."""

    requested: list[str]
    """The distinct UIDs the kubelet sent, in its order: exactly the keys of the answer."""
    forward: list[ClaimRef]
    """One claim per UID, for claim_preparation."""
    rejected: dict[str, str]
    """UID -> error, for claims that never leave the shim."""


def describe(claim: ClaimRef) -> str:
    """``namespace/name (uid …)``, with a UID that may be empty, huge or odd shown safely."""
    uid = claim.uid if len(claim.uid) <= _SHOWN_UID else claim.uid[:_SHOWN_UID] + "…"
    return f"{claim.namespace}/{claim.name} (uid {uid!r})"


def check_claims(claims: Sequence[ClaimRef], limit: int) -> CheckedClaims:
    """Sort the kubelet's claims: bad UIDs, UIDs sent with different names, and oversized calls are refused.

    The same claim listed twice is forwarded once (the answer can hold one entry per UID anyway); the same
    UID with two different names is refused, as one of them is not the claim the UID belongs to.
    """
    by_uid: dict[str, list[ClaimRef]] = {}
    for claim in claims:
        by_uid.setdefault(claim.uid, []).append(claim)
    requested = list(by_uid)
    if len(requested) > limit:
        message = (
            f"the call holds {len(requested)} claims, more than the {limit} this driver accepts in one call; "
            "no claim of it was prepared"
        )
        return CheckedClaims(
            requested=requested,
            forward=[],
            rejected={uid: f"claim {describe(refs[0])}: {message}" for uid, refs in by_uid.items()},
        )
    forward: list[ClaimRef] = []
    rejected: dict[str, str] = {}
    for uid, refs in by_uid.items():
        problem = uid_problem(uid) or _conflict(refs)
        if problem:
            rejected[uid] = f"claim {describe(refs[0])}: {problem}"
        else:
            forward.append(refs[0])
    return CheckedClaims(requested=requested, forward=forward, rejected=rejected)


def _conflict(refs: list[ClaimRef]) -> str | None:
    names = sorted({f"{ref.namespace}/{ref.name}" for ref in refs})
    if len(names) == 1:
        return None
    return f"the call names this UID {len(refs)} times with different claims: {', '.join(names)}"


def failure_text(exc: Exception, node: str, timeout: float, service: str = "claim_preparation") -> str:
    """What the kubelet reads for each forwarded claim when the one NATS request to ``service`` failed as a whole."""
    target = f"{service} on node {node}"
    if isinstance(exc, ServiceUnavailable):
        return f"{target} is unreachable (not running?): {exc.message}"
    if isinstance(exc, ServiceTimeout):
        return f"{target} timed out after {timeout:g}s: {exc.message}"
    if isinstance(exc, CommandError):
        return f"{target} failed: {exc.message} (code {exc.code})"
    if isinstance(exc, BusError):
        return f"{target} could not be asked: {exc}"
    return f"{target} could not be asked: {exc!r}"


def merge(
    checked: CheckedClaims,
    results: Mapping[str, R],
    *,
    failure: str | None,
    node: str,
    make_error: Callable[[str], R],
    service: str = "claim_preparation",
) -> dict[str, R]:
    """The answer to the kubelet: one entry per requested UID, no other.

    Refused claims carry their reason; when the request failed, every forwarded claim carries ``failure``;
    a claim claim_preparation left out carries an error saying so. UIDs claim_preparation added on its own
    are dropped (``unexpected_uids`` names them for the log).
    """
    forwarded = {claim.uid: claim for claim in checked.forward}
    answer: dict[str, R] = {}
    for uid in checked.requested:
        if uid in checked.rejected:
            answer[uid] = make_error(checked.rejected[uid])
            continue
        claim = describe(forwarded[uid])
        if failure is not None:
            answer[uid] = make_error(f"claim {claim}: {failure}")
        elif uid in results:
            answer[uid] = results[uid]
        else:
            answer[uid] = make_error(f"claim {claim}: {service} on node {node} sent no result for it")
    return answer


def unexpected_uids(checked: CheckedClaims, results: Mapping[str, object]) -> list[str]:
    """UIDs in claim_preparation's reply that were not forwarded to it."""
    forwarded = {claim.uid for claim in checked.forward}
    return sorted(set(results) - forwarded)


def failed(answer: Mapping[str, R]) -> dict[str, str]:
    """UID -> error of the claims that failed, for logs, metrics and the span."""
    return {uid: result.error for uid, result in answer.items() if result.error}
