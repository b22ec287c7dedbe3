"""``python -m services.compute_domain.node.simulated_imex --config CFG --hosts HOSTS``: a stand-in ``nvidia-imex``.

On a node without the driver's binaries it behaves as ImexDaemon sees IMEX: it reads the config and the nodes
file at startup, resolves the peers' names through the domain's hosts file, and keeps serving; SIGUSR1 makes it
re-read the membership (IMEX re-resolves its peers), SIGTERM or SIGINT make it exit 0. What it serves goes to
``simulated-imex.json`` beside the config, which ``simulated_imex_ctl`` answers queries from and tests read.

To mimic IMEX failing, write a message to ``simulated-imex.fail`` beside the config: the daemon prints it to
stderr and exits 1, at startup or within a tick while running. To mimic a daemon that runs but is not ready
(IMEX waiting for its fabric), create ``simulated-imex.hold``: it reports not ready until the file goes.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

import msgspec

from libs.files import write_atomically
from services.compute_domain.node.imex_config import SENTINEL_IP, parse_config, parse_hosts

STATUS_FILE = "simulated-imex.json"
FAIL_FILE = "simulated-imex.fail"
HOLD_FILE = "simulated-imex.hold"
TICK = 0.1
REQUIRED = {"DAEMONIZE": "0", "IMEX_CMD_ENABLED": "1"}


class SimulatedStatus(msgspec.Struct, frozen=True, kw_only=True):
    """What the daemon serves: its pid (a stale file names a dead one), its peers (name -> IP), re-reads done."""

    pid: int
    ready: bool
    members: dict[str, str]
    reloads: int


class ImexExit(Exception):
    """The daemon stops with this message on stderr and exit status 1, as IMEX does on a fatal error."""


def status_path(config: Path) -> Path:
    return config.with_name(STATUS_FILE)


def members(config: dict[str, str], hosts: Path) -> dict[str, str]:
    """The peers the nodes file names that resolve to a real address (unused slots map to the sentinel)."""
    names = Path(config["IMEX_NODE_CONFIG_FILE"]).read_text().split()
    mapping = parse_hosts(hosts.read_text()) if hosts.exists() else {}
    return {name: mapping[name] for name in names if mapping.get(name, SENTINEL_IP) != SENTINEL_IP}


def load(config_path: Path) -> dict[str, str]:
    try:
        config = parse_config(config_path.read_text())
    except OSError as exc:
        raise ImexExit(f"cannot read config file {config_path}: {exc}") from exc
    for key, value in REQUIRED.items():
        if config.get(key) != value:
            raise ImexExit(f"config {config_path}: {key} must be {value}, is {config.get(key)!r}")
    if not config.get("IMEX_NODE_CONFIG_FILE"):
        raise ImexExit(f"config {config_path}: IMEX_NODE_CONFIG_FILE is not set")
    return config


def check_told_to_fail(config_path: Path) -> None:
    fail = config_path.with_name(FAIL_FILE)
    if fail.exists():
        raise ImexExit(fail.read_text().strip() or "told to fail")


def held(config_path: Path) -> bool:
    return config_path.with_name(HOLD_FILE).exists()


def publish(config_path: Path, config: dict[str, str], hosts: Path, reloads: int) -> None:
    ready = not held(config_path)
    status = SimulatedStatus(pid=os.getpid(), ready=ready, members=members(config, hosts), reloads=reloads)
    write_atomically(status_path(config_path), msgspec.json.encode(status), mode=0o644)


def serve(config_path: Path, hosts: Path) -> None:
    """Until SIGTERM or SIGINT: re-read the membership on SIGUSR1, fail when told to, hold when told to."""
    config = load(config_path)
    reloads = 0
    holding = held(config_path)
    publish(config_path, config, hosts, reloads)
    while True:
        check_told_to_fail(config_path)
        received = signal.sigtimedwait({signal.SIGUSR1, signal.SIGTERM, signal.SIGINT}, TICK)
        if holding != held(config_path):
            holding = not holding
            publish(config_path, config, hosts, reloads)
        if received is None:
            continue
        if received.si_signo != signal.SIGUSR1:
            return
        reloads += 1
        publish(config_path, config, hosts, reloads)


def main(argv: list[str]) -> int:
    # Signals are taken synchronously, so one that arrives before the loop waits is kept, not lost.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1, signal.SIGTERM, signal.SIGINT})
    parser = argparse.ArgumentParser(prog="simulated_imex")
    parser.add_argument("--config", "-c", type=Path, required=True)
    parser.add_argument("--hosts", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        check_told_to_fail(args.config)
        serve(args.config, args.hosts)
    except ImexExit as exc:
        print(f"IMEX error: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        status_path(args.config).unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
