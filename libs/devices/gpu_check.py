"""gpu-check: what gpudra would see and publish on this machine, without changing anything.

Read-only by construction: it only calls `inventory()`, which never touches MIG mode, clocks, compute
mode or any other GPU setting. Run it on a new GPU machine before deploying (scripts/gpu-check), or with
`--backend simulated --profile dgx-h100` to see a simulated one.

Exit status: 0 when the slices pass every check, 1 when a check fails, 2 when no backend could start.
"""

import argparse
import asyncio
import logging
import os
import socket
import sys
from collections.abc import Sequence
from typing import Any, TextIO

import yaml

from libs.devices.errors import BackendUnavailable, ProfileError, StateError
from libs.devices.factory import open_backend
from libs.devices.model import Inventory
from libs.slices import MigMode, build_slices, pool_problems
from libs.slices.passthrough import PassthroughGpus


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="gpu-check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--node", default=os.environ.get("NODE_NAME") or socket.gethostname())
    parser.add_argument("--backend", choices=["nvml", "simulated"], default="nvml")
    parser.add_argument("--state-dir", help="simulated backend: where the simulated machine lives")
    parser.add_argument("--profile", help="simulated backend: machine profile name or YAML path")
    parser.add_argument("--k8s-minor", type=int, default=35, help="Kubernetes minor version (34 or newer)")
    parser.add_argument("--mig-mode", choices=[m.value for m in MigMode], default=MigMode.STATIC.value)
    parser.add_argument(
        "--consumable-capacity", action="store_true", help="publish GPUs with MIG off as shareable (KEP-5075)"
    )
    parser.add_argument(
        "--passthrough-gpus", default="none", help="GPUs also offered to VMs: none, all, or minors such as 0,3"
    )
    parser.add_argument("--no-slices", action="store_true", help="print the inventory only")
    return parser.parse_args(argv)


async def inspect(args: argparse.Namespace) -> Inventory:
    backend = await open_backend(args.backend, args.node, args.state_dir, args.profile)
    try:
        return await backend.inventory()
    finally:
        await backend.close()


def describe(inventory: Inventory, out: TextIO) -> None:
    out.write(
        f"node {inventory.node} ({inventory.backend}): driver {inventory.driver_version}, "
        f"CUDA {inventory.cuda_driver_version}, {len(inventory.gpus)} GPU(s), "
        f"confidential computing {inventory.confidential_computing or 'not reported'}\n"
    )
    for gpu in inventory.gpus:
        out.write(
            f"  {gpu.name:8} index {gpu.index}  {gpu.product_name}  {gpu.uuid}\n"
            f"           {gpu.architecture}, compute {gpu.cuda_compute_capability}, "
            f"{gpu.memory_bytes // 2**20} MiB, PCI {gpu.pci_bus_id} root {gpu.pcie_root or '?'} "
            f"NUMA {'-' if gpu.numa_node is None else gpu.numa_node}, MIG {'on' if gpu.mig_enabled else 'off'}, "
            f"IOMMU group {'-' if gpu.iommu_group is None else gpu.iommu_group}"
            f"{', clique ' + gpu.fabric.clique if gpu.fabric else ''}\n"
        )
        for mig in inventory.mig_devices_of(gpu):
            out.write(f"    {mig.name}  {mig.uuid}  GI {mig.gi_id} CI {mig.ci_id}\n")
    for product, profiles in inventory.mig_profiles.items():
        out.write(f"  MIG profiles of {product}:\n")
        for p in profiles:
            starts = ",".join(str(pl.start) for pl in p.placements)
            out.write(f"    {p.name:12} id {p.gi_profile_id:2}  max {p.instance_count}  placements {starts}\n")


def check_slices(inventory: Inventory, args: argparse.Namespace, out: TextIO) -> list[str]:
    slices = build_slices(
        inventory,
        k8s_minor=args.k8s_minor,
        generation=1,
        mig_mode=MigMode(args.mig_mode),
        shared_gpus=args.consumable_capacity,
        passthrough=PassthroughGpus.parse(args.passthrough_gpus),
    )
    out.write(yaml.safe_dump_all(slices, sort_keys=False))
    return pool_problems(slices, args.k8s_minor) + _schema_problems(slices, args.k8s_minor)


def _schema_problems(slices: list[dict[str, Any]], minor: int) -> list[str]:
    """The OpenAPI schema check, where kubernetes-validate is installed (a development dependency)."""
    try:
        import kubernetes_validate
    except ImportError:
        return []
    problems = []
    for resource_slice in slices:
        try:
            kubernetes_validate.validate(resource_slice, f"1.{minor}.0", strict=True)
        except kubernetes_validate.ValidationError as error:
            problems.append(f"{resource_slice['metadata']['name']}: {error.message}")
    return problems


def main(argv: Sequence[str] | None = None, out: TextIO = sys.stdout) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    try:
        inventory = asyncio.run(inspect(args))
    except (BackendUnavailable, ProfileError, StateError) as error:
        print(f"gpu-check: {error}", file=sys.stderr)
        return 2
    describe(inventory, out)
    if args.no_slices:
        return 0
    problems = check_slices(inventory, args, out)
    for problem in problems:
        print(f"gpu-check: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
