"""Wiring of compute_domain: the node side (role ``node``), the controller (role ``controller``), or both in one
process (``both``, the standalone default).

The node side serves ``PrepareChannels`` and ``UnprepareChannels`` (``gpudra.v1.<node>.rpc.computedomains.*``,
what the kubelet shim's ``compute-domain.gpudra.io`` driver forwards), publishes the node's channel slots and
runs the domains' IMEX daemons. The controller follows every domain and every node's membership events; one
replica leads (the KV lease ``computedomains.leader``) and writes statuses, rosters and claim templates.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

from libs.bus import Bus, Endpoint
from libs.bus.election import Election, default_replica
from libs.bus.topology import COMPUTEDOMAIN_BUCKET, COMPUTEDOMAIN_LEASE_PREFIX, LEASE_BUCKET
from libs.cdi import SpecDir
from libs.events.catalogue import PrepareChannels, UnprepareChannels
from libs.events.catalogue.computedomains import PrepareChannelsReply, UnprepareChannelsReply
from libs.kube import KubeApi, KubeError, open_kube, resolve_mode
from libs.kube.slice_publisher import SlicePublisher, SlicePublishError
from libs.runtime.devices import open_devices
from libs.runtime.driver_watch import watching_driver
from libs.runtime.startup import EXIT_CONFIG, EXIT_DEVICES, EXIT_KUBE, StartupError
from services.compute_domain.controller.domains import Domains
from services.compute_domain.node.agent import ChannelAgent, NodeFacts
from services.compute_domain.node.channels import channel_major
from services.compute_domain.node.clique import CliqueError, node_clique
from services.compute_domain.node.daemon import DEFAULT_TIMING
from services.compute_domain.node.ledger import Ledger, LedgerError
from services.compute_domain.node.rosters import Rosters
from services.compute_domain.node.slots import slots_slice
from services.compute_domain.settings import Settings

log = logging.getLogger(__name__)

DEFAULT_NODE_IP = "127.0.0.1"
PROC_DEVICES = Path("/proc/devices")
HANDLERS_AT_ONCE = 16
"""Prepares wait for daemons; unprepares must not queue behind them."""


@asynccontextmanager
async def lifespan(bus: Bus, settings: Settings) -> AsyncIterator[Sequence[Endpoint[Any]]]:
    async with AsyncExitStack() as stack:
        kube = await _open_kube(bus, settings)
        stack.push_async_callback(kube.close)
        endpoints: list[Endpoint[Any]] = []
        if settings.role in ("controller", "both"):
            await stack.enter_async_context(controller_side(bus, kube, settings))
        if settings.role in ("node", "both"):
            endpoints += await stack.enter_async_context(node_side(bus, kube, settings))
        log.info("compute_domain started", extra={"role": settings.role, "node": settings.node_name})
        yield endpoints


async def _open_kube(bus: Bus, settings: Settings) -> KubeApi:
    try:
        return await open_kube(settings, bus.js)
    except KubeError as exc:
        raise StartupError(EXIT_KUBE, f"{exc} (settings --kube-mode / --kubeconfig)") from exc


@asynccontextmanager
async def controller_side(bus: Bus, kube: KubeApi, settings: Settings) -> AsyncIterator[Domains]:
    replica = settings.controller_id or default_replica()
    domains = Domains(bus, kube, instance=replica)
    await domains.start()
    try:
        leading: set[asyncio.Task[None]] = set()

        def changed(is_leader: bool) -> None:
            task = asyncio.create_task(domains.lead(is_leader))
            leading.add(task)
            task.add_done_callback(leading.discard)

        election = Election(
            await bus.kv(LEASE_BUCKET),
            COMPUTEDOMAIN_LEASE_PREFIX,
            replica=replica,
            incarnation=uuid.uuid4().hex,
            renew_seconds=settings.lease_renew_seconds,
            on_change=changed,
        )
        await election.start()
        try:
            yield domains
        finally:
            await election.stop()
            await asyncio.gather(*leading, return_exceptions=True)
    finally:
        await domains.stop()


@asynccontextmanager
async def node_side(bus: Bus, kube: KubeApi, settings: Settings) -> AsyncIterator[list[Endpoint[Any]]]:
    facts = await _node_facts(settings)
    try:
        ledger = await asyncio.to_thread(Ledger.load, facts.state_dir / "computedomains")
    except LedgerError as exc:
        raise StartupError(EXIT_CONFIG, f"{exc} (setting --state-dir / GPUDRA_STATE_DIR)") from exc
    rosters = Rosters(await bus.kv(COMPUTEDOMAIN_BUCKET))
    await rosters.start()
    agent = ChannelAgent(bus, kube, rosters=rosters, ledger=ledger, specs=SpecDir(settings.cdi_dir), facts=facts)
    publisher = SlicePublisher(
        kube,
        settings.node_name,
        driver=settings.driver_name,
        synthetic_owner=resolve_mode(settings.kube_mode, settings.kubeconfig, os.environ) == "local",
    )
    try:
        await agent.start()
        await _publish_slots(publisher, settings, facts.clique)

        async def prepare(command: PrepareChannels) -> PrepareChannelsReply:
            return PrepareChannelsReply(results=await agent.prepare(command.claims))

        async def unprepare(command: UnprepareChannels) -> UnprepareChannelsReply:
            return UnprepareChannelsReply(results=await agent.unprepare(command.claims))

        async with watching_driver(settings, bus.link.fail):  # IMEX, the clique and the channel major are its
            yield [
                Endpoint(PrepareChannels, prepare, concurrency=HANDLERS_AT_ONCE),
                Endpoint(UnprepareChannels, unprepare, concurrency=HANDLERS_AT_ONCE),
            ]
    finally:
        await agent.stop()
        await rosters.stop()


async def _node_facts(settings: Settings) -> NodeFacts:
    backend = await open_devices(settings)
    try:
        clique = node_clique(await backend.inventory())
    except CliqueError as exc:
        raise StartupError(EXIT_DEVICES, str(exc)) from exc
    finally:
        await backend.close()
    proc_devices = await asyncio.to_thread(_read_if_there, PROC_DEVICES)
    major = channel_major(proc_devices)
    if clique and major is None and settings.backend == "nvml":
        log.warning(
            "the driver registered no %s character device (/proc/devices): channel claims get device nodes the "
            "runtime cannot create; is the IMEX-capable driver loaded?",
            "nvidia-caps-imex-channels",
            extra={"node": settings.node_name},
        )
    log.info("NVLink clique %s", clique or "none (no channel claims here)", extra={"node": settings.node_name})
    return NodeFacts(
        node=settings.node_name,
        driver=settings.driver_name,
        clique=clique,
        ip_address=settings.node_ip or DEFAULT_NODE_IP,
        state_dir=Path(settings.state_dir),
        driver_root=settings.driver_root_mount or settings.driver_root,
        channel_major=major if settings.backend == "nvml" else None,
        system_hosts=Path(settings.imex_hosts_file),
        admission_timeout=settings.admission_timeout_seconds,
        ready_timeout=settings.channel_ready_timeout_seconds,
        daemon_timing=DEFAULT_TIMING,
    )


def _read_if_there(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


async def _publish_slots(publisher: SlicePublisher, settings: Settings, clique: str) -> None:
    try:
        await publisher.publish(slots_slice(settings.node_name, settings.driver_name, settings.channel_slots, clique))
    except SlicePublishError as exc:
        raise StartupError(EXIT_KUBE, f"cannot publish the channel slots: {exc}") from exc
