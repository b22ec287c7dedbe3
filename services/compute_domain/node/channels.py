"""A channel claim on this node, pure: what it asks for, which IMEX channel it gets, and its CDI spec.

- The claim holds one slot device of this node's channel pool (``slot-<N>``, published by ``slots``) and a
  ``ComputeDomainChannelConfig`` naming the domain. Slots only count how many channel claims a node takes;
  the channel injected is the domain's on this node, so every pod of a domain on a node shares one channel
  (IMEX memory is imported by processes holding the exporter's channel).
- A domain takes channel 0 when no other domain holds it here, else the lowest free one: with one domain per
  node (what IMEX on real hardware runs) every member injects channel 0 as NVIDIA's driver does, and two
  domains on one node never share a channel. ``All`` injects every channel the node has.
- The device nodes are ``/dev/nvidia-caps-imex-channels/channel<N>``, character devices whose major is the
  ``nvidia-caps-imex-channels`` line of ``/proc/devices``: the runtime creates them in the container, as the
  driver creates none by default.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

from libs.cdi import ContainerEdits, Device, DeviceNode, Spec, claim_kind, minimum_version, qualified_name
from libs.claims.allocation import read_allocation
from libs.claims.configapi import AllocationMode, DecodeProblem, decode_channel_config
from libs.claims.problems import ClaimNotUsable, ClaimProblem
from libs.events.catalogue import ClaimRef, PreparedDevice

CHANNEL_DIR = "/dev/nvidia-caps-imex-channels"
CHANNEL_DEVICE = "nvidia-caps-imex-channels"
MAX_CHANNELS = 2048
"""IMEX channels a node has (the reference hard-codes the driver's 2048 as well)."""
SLOT_PREFIX = "slot-"


class ChannelConfigError(ClaimProblem):
    """The claim's ComputeDomainChannelConfig is missing or malformed."""


class ChannelClaim(msgspec.Struct, frozen=True, kw_only=True):
    """A channel claim as this node prepares it."""

    ref: ClaimRef
    domain_uid: str
    mode: AllocationMode
    request: str
    slot: str


def read_channel_claim(obj: dict[str, Any], ref: ClaimRef, *, driver: str, node: str) -> ChannelClaim:
    """The claim's slot and domain, after the checks every claim gets (its UID, allocated here, to this driver)."""
    allocated = read_allocation(obj, ref, driver=driver, node=node)
    if len(allocated.results) != 1:
        devices = ", ".join(result.device for result in allocated.results)
        raise ClaimNotUsable(f"a channel claim holds exactly one device of {driver}, this one holds {devices}")
    result = allocated.results[0]
    if not result.device.startswith(SLOT_PREFIX):
        raise ClaimNotUsable(f"device {result.device} is not a channel slot of {driver} (slot-<N>)")
    configs = [entry for entry in allocated.configs if entry.applies_to(result)]
    if not configs:
        raise ChannelConfigError(
            f"it carries no ComputeDomainChannelConfig for {driver}: create it from the domain's claim template"
        )
    entry = configs[-1]  # claim configs come after class configs: the most specific wins
    try:
        config = decode_channel_config(entry.parameters)
    except DecodeProblem as exc:
        raise ChannelConfigError(f"{entry.describe()}: {exc}") from None
    return ChannelClaim(
        ref=ref, domain_uid=config.domain_id, mode=config.allocation_mode, request=result.request, slot=result.device
    )


def choose_channel(domain_uid: str, held: Mapping[int, str]) -> int:
    """The domain's channel on this node: the one it holds already, else the lowest no other domain holds."""
    for channel, holder in sorted(held.items()):
        if holder == domain_uid:
            return channel
    free = next((channel for channel in range(MAX_CHANNELS) if channel not in held), None)
    if free is None:
        raise ClaimProblem(f"all {MAX_CHANNELS} IMEX channels of this node are held by other compute domains")
    return free


def injected_channels(channel: int, mode: AllocationMode) -> range:
    return range(MAX_CHANNELS) if mode == "All" else range(channel, channel + 1)


def channel_major(proc_devices: str) -> int | None:
    """The major of ``nvidia-caps-imex-channels`` in ``/proc/devices``'s character section, None if absent."""
    in_characters = False
    for line in proc_devices.splitlines():
        if line.strip().endswith(":"):
            in_characters = line.strip() == "Character devices:"
            continue
        fields = line.split()
        if in_characters and len(fields) == 2 and fields[1] == CHANNEL_DEVICE and fields[0].isdigit():
            return int(fields[0])
    return None


def channel_spec(driver: str, claim: ChannelClaim, channels: Sequence[int], major: int | None) -> Spec:
    """One CDI device for the claim's slot, with a node per injected channel (``major`` None: the runtime takes
    the host's node at the same path, as on a simulated machine)."""
    nodes = tuple(
        DeviceNode(path=f"{CHANNEL_DIR}/channel{n}", type="c", major=major, minor=n, file_mode=0o666)
        if major is not None
        else DeviceNode(path=f"{CHANNEL_DIR}/channel{n}")
        for n in channels
    )
    device = Device(name=f"{claim.ref.uid}-{claim.slot}", container_edits=ContainerEdits(device_nodes=nodes))
    spec = Spec(cdi_version="0.3.0", kind=claim_kind(driver), devices=(device,))
    return Spec(cdi_version=minimum_version(spec), kind=spec.kind, devices=spec.devices)


def prepared(driver: str, claim: ChannelClaim, node: str) -> list[PreparedDevice]:
    """What the kubelet hears: the slot, and the CDI device that injects the channel."""
    device_id = qualified_name(claim_kind(driver), f"{claim.ref.uid}-{claim.slot}")
    return [
        PreparedDevice(
            request_names=[claim.request.split("/", 1)[0]], pool=node, device=claim.slot, cdi_device_ids=[device_id]
        )
    ]
