"""Device names as published in ResourceSlices.

Names come from the minor number (stable across reboots), never from the enumeration index, and use the
same format as the reference driver, so a claim written for it selects the same devices here. A MIG name
is the same whether the MIG device exists already (static MIG) or is offered as a partition (dynamic MIG),
so a pre-existing layout and a dynamic one agree on names.
"""

import re

_NOT_DNS = re.compile(r"[^a-z0-9]")


def gpu_device_name(minor: int) -> str:
    return f"gpu-{minor}"


def vfio_device_name(minor: int) -> str:
    """The GPU as a VM gets it (bound to vfio-pci): a device of its own beside ``gpu-<minor>``."""
    return f"gpu-{minor}-vfio"


def profile_token(profile_name: str) -> str:
    """`1g.10gb` -> `1g10gb`, `1g.10gb+me` -> `1g10gbme`: device names must be DNS labels."""
    return _NOT_DNS.sub("", profile_name.lower())


def mig_device_name(parent_minor: int, profile_name: str, gi_profile_id: int, placement_start: int) -> str:
    return f"gpu-{parent_minor}-mig-{profile_token(profile_name)}-{gi_profile_id}-{placement_start}"
