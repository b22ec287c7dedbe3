"""DeviceTaintRules: an operator's taints on gpudra's devices, read so gpudra's word on a device agrees with them.

A DeviceTaintRule (``resource.k8s.io/v1beta2``, Kubernetes 1.36, beta and off by default: gate
``DRADeviceTaintRules``) taints the devices its selector picks (driver, pool, device; each left out matches
all) without touching their ResourceSlices. Kubernetes applies it itself: the scheduler keeps claims off a
device tainted ``NoSchedule`` or ``NoExecute``, and its eviction controller evicts pods from ``NoExecute``.
What is gpudra's to do, and done here:

- the device's health (``DeviceHealthChanged``: the claims' Ready condition, the kubelet's health stream) says
  it is unusable while a rule blocks it, naming the rule, and usable again when the rule goes;
- a drain counts a rule's ``NoExecute`` taints beside gpudra's own when it asks whether a pod tolerates the
  device (a pod that does not tolerate the rule is Kubernetes' to evict anyway).

Where the API is not served (1.34, 1.35, or 1.36 with the gate off) nothing is followed, and a line says so.
A rule is read at the boundary: one that does not decode is skipped with a warning naming it, and an effect
this code does not know is treated as ``None``, as the API asks of consumers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence

import msgspec

from libs.kube import DEVICE_TAINT_RULES, KubeApi, KubeError, NotFound, Obj
from libs.kube.follow import follow
from libs.slices.taints import DeviceTaint, Effect

log = logging.getLogger(__name__)

BLOCKING = frozenset({"NoSchedule", "NoExecute"})


class _Selector(msgspec.Struct, frozen=True, kw_only=True):
    driver: str | None = None
    pool: str | None = None
    device: str | None = None


class _Taint(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    key: str
    effect: str
    value: str | None = None
    time_added: str | None = None


class _Spec(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    taint: _Taint
    device_selector: _Selector | None = None


class Rule(msgspec.Struct, frozen=True, kw_only=True):
    """One DeviceTaintRule as read: its name, what it selects (None: nothing), and its taint."""

    name: str
    selector: _Selector | None
    taint: DeviceTaint

    def selects(self, driver: str, pool: str, device: str) -> bool:
        chosen = self.selector
        if chosen is None:
            return False  # the API: without a selector, no device matches
        return all(
            want is None or want == have
            for want, have in ((chosen.driver, driver), (chosen.pool, pool), (chosen.device, device))
        )


class RuleTaint(msgspec.Struct, frozen=True, kw_only=True):
    rule: str
    taint: DeviceTaint


def read_rule(obj: Obj) -> Rule:
    """A rule as the controller uses it; ``msgspec.ValidationError`` when its spec does not decode."""
    spec = msgspec.convert(obj.get("spec") or {}, _Spec)
    taint = DeviceTaint(
        key=spec.taint.key, effect=_effect(spec.taint.effect), value=spec.taint.value, time_added=spec.taint.time_added
    )
    return Rule(name=str(obj["metadata"]["name"]), selector=spec.device_selector, taint=taint)


_EFFECTS: dict[str, Effect] = {"NoSchedule": "NoSchedule", "NoExecute": "NoExecute"}


def _effect(text: str) -> Effect:
    return _EFFECTS.get(text, "None")  # the API: an effect a consumer does not know counts as None


def taints_on(rules: Iterable[Rule], driver: str, node: str, devices: Iterable[str]) -> dict[str, list[RuleTaint]]:
    """Device → the rules' taints on it, for the devices of ``node``'s pool (a node's pool is named after it)."""
    found: dict[str, list[RuleTaint]] = {}
    ordered = sorted(rules, key=lambda r: r.name)
    for device in devices:
        for rule in ordered:
            if rule.selects(driver, node, device):
                found.setdefault(device, []).append(RuleTaint(rule=rule.name, taint=rule.taint))
    return found


def blocking_rules(taints: Sequence[RuleTaint]) -> list[str]:
    return sorted({t.rule for t in taints if t.taint.effect in BLOCKING})


def with_rule_taints(
    own: Mapping[str, Sequence[DeviceTaint]], ruled: Mapping[str, Sequence[RuleTaint]]
) -> dict[str, list[DeviceTaint]]:
    """gpudra's taints per device with the rules' added: what Kubernetes sees on each device."""
    merged = {device: list(taints) for device, taints in own.items()}
    for device, taints in ruled.items():
        merged.setdefault(device, []).extend(t.taint for t in taints)
    return merged


Changed = Callable[[str, str], Awaitable[None]]
"""Called with (node, device) for every device whose rule taints changed."""


class TaintRules:
    """Follows the cluster's DeviceTaintRules when they are served, and answers which taints they put where.

    ``devices`` gives each node's device names (the controller's inventory view), since a rule may select a
    whole pool or every pool."""

    def __init__(self, kube: KubeApi, driver: str, devices: Callable[[], Mapping[str, Sequence[str]]]) -> None:
        self._kube = kube
        self._driver = driver
        self._devices = devices
        self._rules: dict[str, Rule] = {}
        self._task: asyncio.Task[None] | None = None
        self.on_change: Changed | None = None
        self.served = False

    async def start(self) -> None:
        try:
            await self._kube.list(DEVICE_TAINT_RULES)
        except NotFound:
            log.info(
                "DeviceTaintRules are not served (Kubernetes 1.36 with DRADeviceTaintRules on is needed): not followed"
            )
            return
        except KubeError as exc:
            log.warning("cannot list DeviceTaintRules; not following them: %s", exc)
            return
        self.served = True
        self._task = asyncio.create_task(follow(self._kube, DEVICE_TAINT_RULES, self._apply), name="taint rules")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def taints(self, node: str, devices: Iterable[str] | None = None) -> dict[str, list[RuleTaint]]:
        """The rules' taints on ``node``'s devices (all it has, by the inventory view, when not given)."""
        names = devices if devices is not None else self._devices().get(node, ())
        return taints_on(self._rules.values(), self._driver, node, names)

    async def _apply(self, kind: str, obj: Obj) -> None:
        name = str(obj["metadata"]["name"])
        before = self._everywhere()
        if kind == "DELETED":
            self._rules.pop(name, None)
        else:
            try:
                self._rules[name] = read_rule(obj)
            except msgspec.ValidationError as exc:
                log.warning("DeviceTaintRule %s cannot be read; ignoring it: %s", name, exc, extra={"rule": name})
                self._rules.pop(name, None)
        after = self._everywhere()
        if self.on_change is None:
            return
        for node, device in sorted(set(before) | set(after)):
            if before.get((node, device)) != after.get((node, device)):
                await self.on_change(node, device)

    def _everywhere(self) -> dict[tuple[str, str], list[RuleTaint]]:
        return {
            (node, device): taints
            for node, devices in self._devices().items()
            for device, taints in taints_on(self._rules.values(), self._driver, node, devices).items()
        }
