"""The opaque configuration of an IMEX channel claim, API ``resource.gpudra.io/v1beta1``.

Put in a ResourceClaim's ``config[].opaque.parameters`` for driver ``compute-domain.gpudra.io``; the
ComputeDomain controller writes it into the claim template it makes for a domain::

    apiVersion: resource.gpudra.io/v1beta1
    kind: ComputeDomainChannelConfig
    domainID: <the ComputeDomain's UID>
    allocationMode: Single               # or All: every channel of the domain

Here, beside the GPU configs, rather than in the compute-domain service, so that the admission webhook refuses a
bad one with the same structs the node decodes it with at prepare.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

CHANNEL_KIND = "ComputeDomainChannelConfig"
ComputeDomainDriverSetting = Annotated[
    str,
    msgspec.Meta(
        description="the DRA driver of ComputeDomains' IMEX channel claims: the shim serves it, admission checks "
        "its configs (empty: neither)"
    ),
]
"""The driver whose claims carry these configs, one setting name for every service that needs it."""
AllocationMode = Literal["Single", "All"]
"""Single: the claim gets channel 0 of the domain; All: every channel the node's IMEX daemon offers."""


class ComputeDomainChannelConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    api_version: Literal["resource.gpudra.io/v1beta1"] = msgspec.field(name="apiVersion")
    kind: Literal["ComputeDomainChannelConfig"]
    domain_id: Annotated[str, msgspec.Meta(min_length=1, max_length=128)] = msgspec.field(name="domainID")
    allocation_mode: AllocationMode = msgspec.field(default="Single", name="allocationMode")
