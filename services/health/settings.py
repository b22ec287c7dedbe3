"""Settings of health: the node monitors' (role ``node``), the remediation controller's (role ``controller``),
or both (standalone).

Standalone mode gives every service one environment, so a name shared with another service means the same
thing there: the device backend and driver root fields come from ``DeviceSettings``, discovery's too (the
monitors must read the GPUs discovery publishes), ``kube_mode``/``kubeconfig`` are what ``libs.kube.settings``
asks every service to carry.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from libs.bus.election import ControllerIdSetting, LeaseRenewSetting, RoleSetting
from libs.devices.settings import DeviceSettings
from libs.kube import KubeconfigSetting, KubeModeSetting
from libs.slices.build import DRIVER_NAME


def _doc(text: str) -> msgspec.Meta:
    return msgspec.Meta(description=text)


Seconds = Annotated[float, msgspec.Meta(gt=0)]


class Settings(DeviceSettings, kw_only=True, frozen=True):
    """GPU fault detection on the node and the cluster-wide remediation controller."""

    role: RoleSetting = "both"

    # --- node monitors (role node; the device backend's fields come from DeviceSettings) -------------------
    monitor_poll_seconds: Annotated[Seconds, _doc("counter poll interval per GPU")] = 5.0
    monitor_deadline_seconds: Annotated[Seconds, _doc("a poll longer than this makes its GPU unmonitored")] = 30.0
    monitor_restart_seconds: Annotated[
        Seconds, _doc("first pause before restarting a crashed monitor (doubles, up to 30 s)")
    ] = 1.0
    monitor_inventory_seconds: Annotated[Seconds, _doc("how often the GPU/MIG list is read again")] = 60.0
    ecc_uncorrected_threshold: Annotated[
        int, _doc("volatile uncorrected ECC errors that make a fault (0: off)"), msgspec.Meta(ge=0)
    ] = 1
    ecc_corrected_threshold: Annotated[
        int, _doc("corrected ECC errors between two polls that start corrected-rising (0: off)"), msgspec.Meta(ge=0)
    ] = 100
    temperature_threshold_c: Annotated[
        int, _doc("temperature that makes over-temperature (0: off)"), msgspec.Meta(ge=0)
    ] = 90
    pcie_replay_threshold: Annotated[
        int, _doc("PCIe replays between two polls that start replays-rising (0: off)"), msgspec.Meta(ge=0)
    ] = 100

    # --- remediation controller (role controller) -------------------------------------------------------
    kube_mode: KubeModeSetting = "auto"
    kubeconfig: KubeconfigSetting = ""
    dry_run: Annotated[
        bool, _doc("decide and publish as usual, but change nothing in the cluster (events say dry_run)")
    ] = False
    opt_out_label: Annotated[
        str, _doc("a node with this label set to 'disabled' is never quarantined; its faults are only recorded")
    ] = f"{DRIVER_NAME}/remediation"
    catalogue_file: Annotated[
        str, _doc("fault catalogue override (YAML, merged over the shipped defaults); empty: the defaults")
    ] = ""
    drain_policy_file: Annotated[
        str, _doc("drain policy (YAML: rules by namespace/pod labels); empty: evict every pod, grace 60 s")
    ] = ""
    breaker_max_share: Annotated[
        float,
        _doc("circuit breaker: most GPU nodes quarantined within the window, as a share"),
        msgspec.Meta(gt=0, le=1),
    ] = 0.5
    breaker_max_nodes: Annotated[
        int, _doc("circuit breaker: most nodes quarantined within the window, absolute"), msgspec.Meta(ge=1)
    ] = 50
    breaker_window_seconds: Annotated[Seconds, _doc("circuit breaker: the sliding window")] = 300.0
    reset_attempts: Annotated[
        int, _doc("GPU resets (or reboots) tried before giving up; failed verifications count"), msgspec.Meta(ge=1)
    ] = 3
    reset_fallback_reboot: Annotated[
        bool, _doc("when a GPU's resets run out, reboot the node instead of stopping at remediation-failed")
    ] = True
    reboot_hook: Annotated[
        str,
        _doc(
            "how a node is rebooted: 'simulated' (the simulated GPUs come back), 'none' (reboots fail: a person "
            "acts), a command line ({node} and {mode} are filled in; exit 0 = reboot asked for, and the node is back "
            "once its Node reports a new boot id), or 'auto' (simulated with the simulated backend, else none)"
        ),
    ] = "auto"
    verify_seconds: Annotated[
        Seconds,
        _doc(
            "after a reset or reboot, how long the monitors have to report the repaired entity healthy (longer than "
            "the monitors' poll interval)"
        ),
    ] = 30.0
    reset_timeout_seconds: Annotated[Seconds, _doc("how long one GPU reset request may take")] = 120.0
    reboot_timeout_seconds: Annotated[
        Seconds, _doc("how long one reboot may take, from asking for it until the node is back (a new boot id)")
    ] = 900.0
    drain_pass_seconds: Annotated[Seconds, _doc("pause between two passes of a drain that waits for pods")] = 5.0
    drain_timeout_seconds: Annotated[
        Seconds, _doc("a drain still blocked (PodDisruptionBudget, pods that do not finish) after this fails")
    ] = 3600.0
    controller_id: ControllerIdSetting = ""
    controller_workers: Annotated[int, _doc("nodes the controller works on at once"), msgspec.Meta(ge=1)] = 128
    lease_renew_seconds: LeaseRenewSetting = 10.0
    sweep_seconds: Annotated[Seconds, _doc("how often the leader looks for work a dead replica left behind")] = 15.0
