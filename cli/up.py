"""``gpudra up``: the whole system on one machine — embedded NATS, every service, simulated GPUs."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from pathlib import Path

import msgspec

from cli import endpoints as endpoints_file
from cli.supervisor import Child, ServiceSpec, Supervised, SupervisedNats, Supervisor, python_module
from libs.bus import Bus
from libs.bus.directory import list_services
from libs.bus.topology import BusLimits
from libs.events.catalogue import ServiceCrashed
from libs.natsserver import EmbeddedNats
from libs.settings import CommonSettings, env_name, load_settings
from libs.trust.authority import Authority
from libs.trust.roles import PRINCIPALS, Role

log = logging.getLogger(__name__)

SERVICES = ("kubelet_shim", "discovery", "claim_preparation", "health", "compute_domain")
GPU_DRIVER = "gpu.gpudra.io"
COMPUTE_DOMAIN_DRIVER = "compute-domain.gpudra.io"


def add_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    parser = subparsers.add_parser("up", parents=[common], help="start the whole system in standalone mode")
    parser.add_argument("--node", default="node-0", help="node name (default node-0)")
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


def layout(
    state_dir: Path, node: str, profile: str, nats_url: str, kubelet_dir: Path | None = None
) -> endpoints_file.Endpoints:
    kubelet = kubelet_dir or state_dir / "kubelet"
    credentials = state_dir / "trust" / "users"
    return endpoints_file.Endpoints(
        nats_url=nats_url,
        nats_creds=str(credentials / "operator.creds"),
        extender_creds=str(credentials / "extender.creds"),
        credentials_dir=str(credentials),
        node=node,
        profile=profile,
        state_dir=str(state_dir),
        kubelet=endpoints_file.KubeletPaths(
            root=str(kubelet),
            registration_dir=str(kubelet / "plugins_registry"),
            plugins_dir=str(kubelet / "plugins" / GPU_DRIVER),
        ),
        cdi_dir=str(state_dir / "cdi"),
        drivers={"gpu": GPU_DRIVER, "compute-domain": COMPUTE_DOMAIN_DRIVER},
        services={},
        logs_dir=str(state_dir / "logs"),
    )


def socket_path_problem(system: endpoints_file.Endpoints) -> str:
    """A message when the DRA socket path would be too long for a unix socket, else ""."""
    dra_socket = Path(system.kubelet.plugins_dir) / "dra.sock"
    if len(str(dra_socket).encode()) <= SOCKET_PATH_MAX:
        return ""
    return (
        f"{dra_socket} is {len(str(dra_socket).encode())} bytes, over the {SOCKET_PATH_MAX}-byte limit of a unix "
        "socket path: use a shorter --state-dir or give --kubelet-dir"
    )


def service_env(system: endpoints_file.Endpoints) -> dict[str, str]:
    """One environment for all services: every setting has a unique GPUDRA_* name."""
    values = {
        "nats_url": system.nats_url,
        "node_name": system.node,
        "state_dir": system.state_dir,
        "kubelet_dir": system.kubelet.root,
        "cdi_dir": system.cdi_dir,
        "backend": "simulated",
        "kube_mode": "local",  # standalone: the KV-backed store, even when run inside a pod
        "profile": system.profile,
        "log_format": "json",
    }
    return {env_name(key): value for key, value in values.items()}


def credentials_of(system: endpoints_file.Endpoints, principal: str) -> str:
    return str(Path(system.credentials_dir) / f"{principal}.creds")


def specs(system: endpoints_file.Endpoints, names: list[str]) -> list[ServiceSpec]:
    env = service_env(system)
    return [
        ServiceSpec(
            name=name,
            argv=python_module(f"services.{name}"),
            env={**env, env_name("nats_creds"): credentials_of(system, name)},
            log_file=str(Path(system.logs_dir) / f"{name}.log"),
        )
        for name in names
    ]


def children(server: EmbeddedNats, system: endpoints_file.Endpoints, names: list[str]) -> list[Child]:
    """The nats-server first (everything talks over it), then the services."""
    return [SupervisedNats(server), *(Supervised(spec) for spec in specs(system, names))]


def issue_credentials(authority: Authority, system: endpoints_file.Endpoints, names: list[str]) -> None:
    """Fresh owner-only credentials for every client of this system, each with its own roles only."""
    holders = {name: PRINCIPALS[name] for name in (*names, "operator", "extender")}
    holders["supervisor"] = (Role.BOOTSTRAP, Role.SUPERVISOR)
    for principal, roles in holders.items():
        authority.issue(Path(credentials_of(system, principal)), principal, roles, system.node)


async def wait_until_registered(bus: Bus, names: list[str], node: str, timeout: float) -> set[str]:
    """Ready means every service answers ``$SRV.INFO`` for this node: exactly what an operator checks.

    Returns the services still missing when ``timeout`` ran out (empty when all are up).
    """
    pending = set(names)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            while pending:
                found = await list_services(bus.nc, quiet=0.1, limit=0.5)
                pending -= {info.name for info in found if info.node == node}
    return pending


def remove_sockets(system: endpoints_file.Endpoints) -> None:
    for socket_path in Path(system.kubelet.root).rglob("*.sock"):
        socket_path.unlink(missing_ok=True)


def _announce(system: endpoints_file.Endpoints, path: Path) -> None:
    print(f"gpudra is up on node {system.node} (profile {system.profile})")
    print(f"  NATS:              {system.nats_url}")
    print(f"  NATS credentials:  {system.nats_creds} (operator; read-only: {system.extender_creds})")
    print(f"  kubelet plugins:   {system.kubelet.plugins_dir}")
    print(f"  plugin registry:   {system.kubelet.registration_dir}")
    print(f"  CDI specs:         {system.cdi_dir}")
    print(f"  drivers:           {', '.join(system.drivers.values())}")
    print(f"  service logs:      {system.logs_dir}")
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
    state_dir = Path(args.state_dir).resolve()
    kubelet_dir = Path(args.kubelet_dir).absolute() if args.kubelet_dir else None
    problem = socket_path_problem(layout(state_dir, args.node, args.profile, "", kubelet_dir))
    if problem:
        raise UsageError(problem)
    return Plan(state_dir=state_dir, kubelet_dir=kubelet_dir, names=names)


async def _up(args: argparse.Namespace, plan: Plan) -> int:
    state_dir, kubelet_dir, names = plan.state_dir, plan.kubelet_dir, plan.names
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    authority = Authority.open(state_dir / "trust")
    server = EmbeddedNats(state_dir / "nats", port=args.nats_port, auth=authority)
    system = layout(state_dir, args.node, args.profile, server.url, kubelet_dir)
    issue_credentials(authority, system, names)
    bus: Bus | None = None
    announced = False

    async def report(service: str, code: int, restarts: int, delay: float) -> None:
        assert bus is not None
        if not bus.nc.is_connected:  # the nats-server is back; the supervisor's client follows within a second
            bus.link.reconnected.clear()
            await asyncio.wait_for(bus.link.reconnected.wait(), RECONNECT_WAIT)
        crash = ServiceCrashed(
            node=args.node, service=service, exit_code=code, restarts=restarts, restart_in_seconds=delay
        )
        await bus.publish(crash)

    def started() -> None:
        """endpoints.json names the processes running now, not those of the first start."""
        if announced:
            endpoints_file.write(msgspec.structs.replace(system, services=dict(supervisor.pids())))

    supervisor = Supervisor(children(server, system, names), report, started)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await supervisor.start(SupervisedNats.name)
        supervisor_settings = CommonSettings(
            nats_url=server.url, node_name=args.node, nats_creds=credentials_of(system, "supervisor")
        )
        bus = await Bus.connect(supervisor_settings, "supervisor")
        await bus.bootstrap(load_settings(BusLimits, [], os.environ))
        await supervisor.start()
        missing = await wait_until_registered(bus, names, args.node, args.ready_timeout)
        if missing:
            logs = ", ".join(str(Path(system.logs_dir) / f"{name}.log") for name in sorted(missing))
            print(f"services not ready after {args.ready_timeout:g}s; see {logs}", file=sys.stderr)
            return 1
        system = msgspec.structs.replace(system, services=dict(supervisor.pids()))
        _announce(system, endpoints_file.write(system))
        announced = True
        await stop.wait()
        print("stopping ...", flush=True)
    finally:
        endpoints_file.remove(state_dir)
        await supervisor.stop(*names)  # the services first, while the bus is there for their last words
        remove_sockets(system)
        if bus is not None:
            await bus.close()
        await supervisor.stop()
    print("stopped", flush=True)
    return 0


def run(args: argparse.Namespace) -> int:
    try:
        checked = plan(args)
    except UsageError as exc:
        print(f"gpudra up: {exc}", file=sys.stderr)
        return 2
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(_up(args, checked))
    return 130
