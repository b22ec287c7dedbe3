"""``gpudra up``: the whole system on one machine — embedded NATS, every service, simulated GPUs.

``--nodes N`` simulates N nodes on the one NATS server: each runs every node service with its own
credentials (confined to its node's subjects), state directory, CDI directory, simulated machine and kubelet
sockets. The cluster-wide controllers run as one replica per node and elect a leader through their KV lease.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import ipaddress
import logging
import os
import signal
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import IO

import msgspec

from cli import endpoints as endpoints_file
from cli.supervisor import Child, ServiceSpec, Supervised, SupervisedNats, Supervisor, python_module
from libs.bus import Bus
from libs.bus.directory import list_services
from libs.bus.topology import BusLimits
from libs.devices.errors import ProfileError
from libs.devices.simulated import load_profile
from libs.events.catalogue import ServiceCrashed
from libs.natsserver import EmbeddedNats
from libs.settings import CommonSettings, env_name, load_settings
from libs.trust.authority import Authority
from libs.trust.permissions import union
from libs.trust.roles import PRINCIPALS, Role, permissions

log = logging.getLogger(__name__)

SERVICES = ("kubelet_shim", "discovery", "claim_preparation", "health", "compute_domain")
GPU_DRIVER = "gpu.gpudra.io"
COMPUTE_DOMAIN_DRIVER = "compute-domain.gpudra.io"
SUPERVISOR_ROLES = (Role.BOOTSTRAP, Role.SUPERVISOR)


def add_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    parser = subparsers.add_parser("up", parents=[common], help="start the whole system in standalone mode")
    parser.add_argument("--node", default="node-0", help="node name (default node-0)")
    parser.add_argument(
        "--nodes", type=int, default=1, help="simulated nodes; several are named NODE-0 … NODE-<N-1> (default 1)"
    )
    parser.add_argument("--profile", default="dgx-h100", help="simulated machine profile or YAML file")
    parser.add_argument("--nats-port", type=int, default=0, help="embedded NATS port (default: a free one)")
    parser.add_argument(
        "--services", default=",".join(SERVICES), help="comma-separated services to start (default: all)"
    )
    parser.add_argument("--ready-timeout", type=float, default=60.0, help="seconds to wait for services")
    parser.add_argument("--kubelet-dir", default="", help="kubelet root for the sockets (default <state-dir>/kubelet)")
    parser.set_defaults(run=run)


RECONNECT_WAIT = 10.0
"""Seconds the supervisor waits for its client to reconnect to a restarted nats-server before reporting."""

SOCKET_PATH_MAX = 107
"""sun_path holds 108 bytes with the terminating NUL; the kubelet dials the DRA socket by this path."""


def node_names(node: str, count: int) -> list[str]:
    """One node keeps its name, as before ``--nodes``; several are numbered ``NODE-0`` … ``NODE-<count-1>``."""
    return [node] if count == 1 else [f"{node}-{index}" for index in range(count)]


def kubelet_paths(root: Path) -> endpoints_file.KubeletPaths:
    return endpoints_file.KubeletPaths(
        root=str(root),
        registration_dir=str(root / "plugins_registry"),
        plugins_dir=str(root / "plugins" / GPU_DRIVER),
        compute_domain_plugins_dir=channel_plugin_dir(str(root)),
    )


def node_layout(state_dir: Path, kubelet_dir: Path | None, node: str, alone: bool) -> endpoints_file.NodeEndpoints:
    """A lone node lives in the state directory itself, as before ``--nodes``; each of several gets its own
    ``nodes/<node>/`` (and ``<kubelet-dir>/<node>/``, and credentials), so that their sockets, checkpoints,
    CDI specs and simulated machines never meet."""
    users = state_dir / "trust" / "users"
    if alone:
        home, kubelet, credentials = state_dir, kubelet_dir or state_dir / "kubelet", users
    else:
        home = state_dir / "nodes" / node
        kubelet = kubelet_dir / node if kubelet_dir else home / "kubelet"
        credentials = users / node
    return endpoints_file.NodeEndpoints(
        kubelet=kubelet_paths(kubelet), state_dir=str(home), cdi_dir=str(home / "cdi"), credentials_dir=str(credentials)
    )


def layout(
    state_dir: Path, node: str, profile: str, nats_url: str, kubelet_dir: Path | None = None, *, count: int = 1
) -> endpoints_file.Endpoints:
    """Where everything of a system of ``count`` nodes is; the top-level node fields are the first node's."""
    names = node_names(node, count)
    nodes = {name: node_layout(state_dir, kubelet_dir, name, alone=count == 1) for name in names}
    first = nodes[names[0]]
    credentials = state_dir / "trust" / "users"
    return endpoints_file.Endpoints(
        nats_url=nats_url,
        nats_creds=str(credentials / "operator.creds"),
        extender_creds=str(credentials / "extender.creds"),
        credentials_dir=str(credentials),
        node=names[0],
        profile=profile,
        state_dir=str(state_dir),
        kubelet=first.kubelet,
        cdi_dir=first.cdi_dir,
        drivers={"gpu": GPU_DRIVER, "compute-domain": COMPUTE_DOMAIN_DRIVER},
        services={},
        logs_dir=str(state_dir / "logs"),
        nodes=nodes,
    )


def channel_plugin_dir(kubelet_root: str) -> str:
    """Where a standalone node's compute-domain DRA socket lives: ``plugins/cd``, shorter than the driver's name,
    so that it fits a unix socket address wherever the GPU driver's does (the kubelet is told the path)."""
    return str(Path(kubelet_root) / "plugins" / "cd")


def socket_path_problem(system: endpoints_file.Endpoints) -> str:
    """A message when a node's DRA socket paths (both drivers') would be too long for a unix socket, else ""."""
    for node in system.node_names():
        kubelet = system.on(node).kubelet
        for directory in filter(None, (kubelet.plugins_dir, kubelet.compute_domain_plugins_dir)):
            problem = _too_long(Path(directory) / "dra.sock")
            if problem:
                return problem
    return ""


def _too_long(dra_socket: Path) -> str:
    if (size := len(str(dra_socket).encode())) > SOCKET_PATH_MAX:
        return (
            f"{dra_socket} is {size} bytes, over the {SOCKET_PATH_MAX}-byte limit of a unix socket path: use a "
            "shorter --state-dir or give --kubelet-dir"
        )
    return ""


def service_env(system: endpoints_file.Endpoints, node: str = "") -> dict[str, str]:
    """One environment for all services of a node (default: the first): every setting has a unique GPUDRA_* name."""
    name = node or system.node
    paths = system.on(name)
    values = {
        "nats_url": system.nats_url,
        "node_name": name,
        "state_dir": paths.state_dir,
        "kubelet_dir": paths.kubelet.root,
        "compute_domain_plugin_dir": paths.kubelet.compute_domain_plugins_dir,
        "cdi_dir": paths.cdi_dir,
        "backend": "simulated",
        "kube_mode": "local",  # standalone: the KV-backed store, even when run inside a pod
        "profile": system.profile,
        "log_format": "json",
    }
    if len(system.node_names()) > 1:
        # Every node's health runs a remediation controller replica; replicas tell each other apart by their
        # identity, and the default one (the host name) would be the same for all of them.
        values["controller_id"] = name
        # Each node's IMEX daemons get an address of their own on the loopback network (127.0.0.1, .2, ...),
        # so a domain's status and hosts files tell the nodes apart as on a rack.
        values["node_ip"] = str(ipaddress.ip_address("127.0.0.1") + system.node_names().index(name))
    return {env_name(key): value for key, value in values.items()}


def credentials_of(system: endpoints_file.Endpoints, principal: str) -> str:
    """The operator's, the extender's or the supervisor's credentials: one each for the whole system."""
    return str(Path(system.credentials_dir) / f"{principal}.creds")


def service_credentials(system: endpoints_file.Endpoints, node: str, service: str) -> str:
    return str(Path(system.on(node).credentials_dir) / f"{service}.creds")


def supervised_name(system: endpoints_file.Endpoints, node: str, service: str) -> str:
    """A service's name in the supervisor, its log file and its ``ServiceCrashed``: with several nodes the
    node is part of it (``claim_preparation@node-1``); with one it is the service's name alone, as before."""
    return service if len(system.node_names()) == 1 else f"{service}@{node}"


def homes(system: endpoints_file.Endpoints, names: list[str]) -> dict[str, tuple[str, str]]:
    """Supervised name → (node, service), for every service of every node, node by node."""
    return {
        supervised_name(system, node, service): (node, service) for node in system.node_names() for service in names
    }


def log_file(system: endpoints_file.Endpoints, supervised: str) -> str:
    return str(Path(system.logs_dir) / f"{supervised}.log")


def specs(system: endpoints_file.Endpoints, names: list[str]) -> list[ServiceSpec]:
    return [
        ServiceSpec(
            name=supervised,
            argv=python_module(f"services.{service}"),
            env={**service_env(system, node), env_name("nats_creds"): service_credentials(system, node, service)},
            log_file=log_file(system, supervised),
        )
        for supervised, (node, service) in homes(system, names).items()
    ]


def children(server: EmbeddedNats, system: endpoints_file.Endpoints, names: list[str]) -> list[Child]:
    """The nats-server first (everything talks over it), then the services, node by node."""
    return [SupervisedNats(server), *(Supervised(spec) for spec in specs(system, names))]


def issue_credentials(authority: Authority, system: endpoints_file.Endpoints, names: list[str]) -> None:
    """Fresh owner-only credentials for every client of this system, each with its own roles only: a node's
    services for their node alone; the supervisor, which reports every node's crashes, for each node."""
    for principal in ("operator", "extender"):
        authority.issue(Path(credentials_of(system, principal)), principal, PRINCIPALS[principal], system.node)
    for node in system.node_names():
        for name in names:
            authority.issue(Path(service_credentials(system, node, name)), name, PRINCIPALS[name], node)
    granted = union(
        permissions(SUPERVISOR_ROLES, principal="supervisor", node=node, local_kube=True)
        for node in system.node_names()
    )
    authority.write(Path(credentials_of(system, "supervisor")), f"supervisor@{system.node}", granted)


async def wait_until_registered(bus: Bus, expected: set[tuple[str, str]], timeout: float) -> set[tuple[str, str]]:
    """Ready means every (node, service) answers ``$SRV.INFO``: exactly what an operator checks.

    Returns those still missing when ``timeout`` ran out (empty when all are up).
    """
    pending = set(expected)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            while pending:
                found = await list_services(bus.nc, quiet=0.1, limit=0.5)
                pending -= {(info.node, info.name) for info in found}
    return pending


def remove_sockets(system: endpoints_file.Endpoints) -> None:
    """Every node's kubelet sockets, both drivers': those under its kubelet root, and the compute-domain
    driver's DRA socket wherever its plugins directory is."""
    for node in system.node_names():
        kubelet = system.on(node).kubelet
        for directory in dict.fromkeys(filter(None, (kubelet.root, kubelet.compute_domain_plugins_dir))):
            for socket_path in Path(directory).rglob("*.sock"):
                socket_path.unlink(missing_ok=True)


def with_pids(system: endpoints_file.Endpoints, names: list[str], pids: Mapping[str, int]) -> endpoints_file.Endpoints:
    """Each node's service pids under the node; the nats-server's and the first node's at the top, as before."""
    nodes = {
        node: msgspec.structs.replace(
            system.on(node), services={service: pids[supervised_name(system, node, service)] for service in names}
        )
        for node in system.node_names()
    }
    services = {SupervisedNats.name: pids[SupervisedNats.name], **nodes[system.node].services}
    return msgspec.structs.replace(system, services=services, nodes=nodes)


def _announce_nodes(system: endpoints_file.Endpoints) -> None:
    if len(system.node_names()) == 1:
        print(f"  kubelet plugins:   {system.kubelet.plugins_dir}, {system.kubelet.compute_domain_plugins_dir}")
        print(f"  plugin registry:   {system.kubelet.registration_dir}")
        print(f"  CDI specs:         {system.cdi_dir}")
        return
    for node in system.node_names():
        paths = system.on(node)
        print(f"  {'node ' + node + ':':<19}kubelet {paths.kubelet.root}, state {paths.state_dir}")


def _announce(system: endpoints_file.Endpoints, path: Path) -> None:
    several = len(system.node_names()) > 1
    print(f"gpudra is up on node{'s' if several else ''} {', '.join(system.node_names())} (profile {system.profile})")
    print(f"  NATS:              {system.nats_url}")
    print(f"  NATS credentials:  {system.nats_creds} (operator; read-only: {system.extender_creds})")
    _announce_nodes(system)
    print(f"  drivers:           {', '.join(system.drivers.values())}")
    print(f"  service logs:      {system.logs_dir}{' (<service>@<node>.log)' if several else ''}")
    print(f"  endpoints:         {path}")
    print("Try `gpudra services` and `gpudra events tail` in another terminal; Ctrl-C stops everything.")
    sys.stdout.flush()


class UsageError(ValueError):
    pass


class Plan(msgspec.Struct, frozen=True, kw_only=True):
    """What ``up`` will start, checked before anything starts."""

    state_dir: Path
    kubelet_dir: Path | None
    names: list[str]
    nodes: int


def plan(args: argparse.Namespace) -> Plan:
    if args.nats_url:
        raise UsageError(
            "gpudra up runs its own NATS server, with credentials it issues to each service; to use another NATS "
            "server, run the services against it with their own credentials (docs/deploy.md)"
        )
    names = [name.strip() for name in args.services.split(",") if name.strip()]
    unknown = sorted(set(names) - set(SERVICES))
    if unknown:
        raise UsageError(f"unknown service(s) {', '.join(unknown)}; known: {', '.join(SERVICES)}")
    if args.nodes < 1:
        raise UsageError(f"--nodes {args.nodes}: give 1 or more")
    try:
        load_profile(args.profile)  # every service would fail on it, restart after restart
    except ProfileError as exc:
        raise UsageError(f"--profile: {exc}") from None
    state_dir = Path(args.state_dir).resolve()
    kubelet_dir = Path(args.kubelet_dir).absolute() if args.kubelet_dir else None
    problem = socket_path_problem(layout(state_dir, args.node, args.profile, "", kubelet_dir, count=args.nodes))
    if problem:
        raise UsageError(problem)
    return Plan(state_dir=state_dir, kubelet_dir=kubelet_dir, names=names, nodes=args.nodes)


async def _up(args: argparse.Namespace, plan: Plan) -> int:
    plan.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    authority = Authority.open(plan.state_dir / "trust")
    server = EmbeddedNats(plan.state_dir / "nats", port=args.nats_port, auth=authority)
    system = layout(plan.state_dir, args.node, args.profile, server.url, plan.kubelet_dir, count=plan.nodes)
    issue_credentials(authority, system, plan.names)
    placed = homes(system, plan.names)
    bus: Bus | None = None
    announced = False

    async def report(name: str, code: int, restarts: int, delay: float) -> None:
        """On the crashed service's node; the nats-server's crash on the first node's."""
        assert bus is not None
        if not bus.nc.is_connected:  # the nats-server is back; the supervisor's client follows within a second
            bus.link.reconnected.clear()
            await asyncio.wait_for(bus.link.reconnected.wait(), RECONNECT_WAIT)
        node = placed[name][0] if name in placed else system.node
        crash = ServiceCrashed(node=node, service=name, exit_code=code, restarts=restarts, restart_in_seconds=delay)
        await bus.publish(crash)

    def started() -> None:
        """endpoints.json names the processes running now, not those of the first start."""
        if announced:
            endpoints_file.write(with_pids(system, plan.names, supervisor.pids()))

    supervisor = Supervisor(children(server, system, plan.names), report, started)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await supervisor.start(SupervisedNats.name)
        supervisor_settings = CommonSettings(
            nats_url=server.url, node_name=system.node, nats_creds=credentials_of(system, "supervisor")
        )
        bus = await Bus.connect(supervisor_settings, "supervisor")
        await bus.bootstrap(load_settings(BusLimits, [], os.environ))
        await supervisor.start()
        missing = await wait_until_registered(bus, set(placed.values()), args.ready_timeout)
        if missing:
            logs = ", ".join(log_file(system, supervised_name(system, *where)) for where in sorted(missing))
            print(f"services not ready after {args.ready_timeout:g}s; see {logs}", file=sys.stderr)
            return 1
        system = with_pids(system, plan.names, supervisor.pids())
        _announce(system, endpoints_file.write(system))
        announced = True
        await stop.wait()
        print("stopping ...", flush=True)
    finally:
        endpoints_file.remove(plan.state_dir)
        await supervisor.stop(*placed)  # the services first, while the bus is there for their last words
        remove_sockets(system)
        if bus is not None:
            await bus.close()
        await supervisor.stop()
    print("stopped", flush=True)
    return 0


LOCK_FILE = "up.lock"


def hold_state_dir(state_dir: Path) -> IO[str]:
    """One ``up`` per state directory: a second would start another nats-server on the same store and, when it
    stopped, delete the first system's endpoints.json and sockets. The lock goes with the process, however it
    ends (the kernel drops it with the file descriptor)."""
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    held = (state_dir / LOCK_FILE).open("a+")
    try:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        held.seek(0)
        owner = held.read().strip() or "unknown"
        held.close()
        raise UsageError(
            f"another gpudra up (pid {owner}) runs on {state_dir}; stop it (Ctrl-C) or give another --state-dir"
        ) from None
    held.seek(0)
    held.truncate()
    held.write(f"{os.getpid()}\n")
    held.flush()
    return held


def run(args: argparse.Namespace) -> int:
    try:
        checked = plan(args)
        held = hold_state_dir(checked.state_dir)
    except UsageError as exc:
        print(f"gpudra up: {exc}", file=sys.stderr)
        return 2
    with held, contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(_up(args, checked))
    return 130
