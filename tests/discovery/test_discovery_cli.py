"""``gpudra devices`` and ``gpudra slices`` against a running discovery (real bus, real processes for the CLI)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import msgspec
import yaml

from cli.devices import Bookkeeping, table
from libs.bus import Bus
from libs.devices.simulated import load_profile
from libs.devices.simulated.ops import initial_state, inventory_of
from libs.events.catalogue import SlicesPublished
from libs.natsserver import EmbeddedNats
from tests.discovery.discovery_support import InventoryEvents, discovery_process, discovery_settings
from tests.support.nats_fixture import operator_args


async def gpudra(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cli", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode or 0, out.decode(), err.decode()


def test_the_table_shows_each_gpu_with_its_mig_devices_under_it() -> None:
    inventory = inventory_of(initial_state("node-a", load_profile("mixed-mig")))
    lines = table([(inventory, Bookkeeping(generation=4, reason="mig-reconfigured"))]).splitlines()
    assert lines[0].startswith("# node node-a: 8 GPUs, ")
    assert lines[0].endswith("backend simulated, generation 4 (mig-reconfigured)")
    assert lines[1].split() == [
        "NODE",
        "DEVICE",
        "TYPE",
        "MODEL/PROFILE",
        "MEMORY",
        "PCI",
        "BUS/PLACEMENT",
        "NUMA",
        "MIG",
        "UUID",
    ]
    devices = [line.split()[1] for line in lines[2:]]
    assert devices[0] == "gpu-0"
    assert devices[1].startswith("gpu-0-mig-")
    assert len(devices) == len(inventory.gpus) + len(inventory.mig_devices)
    gpu_7 = next(line for line in lines if line.split()[1] == "gpu-7")
    assert "NVIDIA H100 80GB HBM3" in gpu_7
    assert "80Gi" in gpu_7
    assert " off " in gpu_7


async def test_devices_and_slices_print_what_discovery_published(
    nats_server: EmbeddedNats, bus: Bus, tmp_path: Path
) -> None:
    events = await InventoryEvents.subscribe(bus)
    async with discovery_process(discovery_settings(nats_server.url, tmp_path)):
        await events.next(SlicesPublished)
        (code_json, out_json, _), (code_table, out_table, _), (code_yaml, out_yaml, _) = await asyncio.gather(
            gpudra("devices", *operator_args(nats_server.url), "-o", "json"),
            gpudra("devices", *operator_args(nats_server.url), "--node", "node-a"),
            gpudra("slices", *operator_args(nats_server.url), "--node", "node-a"),
        )
    assert (code_json, code_table, code_yaml) == (0, 0, 0)
    [stored] = msgspec.json.decode(out_json)
    assert (stored["node"], stored["generation"], len(stored["gpus"])) == ("node-a", 1, 8)
    assert out_table.splitlines()[0].startswith("# node node-a: 8 GPUs, 0 MIG devices")
    assert len(out_table.splitlines()) == 2 + 8
    listed = yaml.safe_load(out_yaml)
    assert (listed["apiVersion"], listed["kind"]) == ("v1", "List")
    [resource_slice] = listed["items"]
    assert resource_slice["spec"]["nodeName"] == "node-a"
    assert [d["name"] for d in resource_slice["spec"]["devices"]] == [f"gpu-{i}" for i in range(8)]


async def test_an_unknown_node_is_a_clear_error(nats_server: EmbeddedNats, bus: Bus) -> None:
    (code_devices, _, err_devices), (code_slices, out_slices, err_slices) = await asyncio.gather(
        gpudra("devices", *operator_args(nats_server.url), "--node", "gpu-9"),
        gpudra("slices", *operator_args(nats_server.url), "--node", "gpu-9", "-o", "json"),
    )
    assert code_devices == code_slices == 1
    assert "no inventory for node gpu-9 in gpudra_inventory; is discovery running?" in err_devices
    assert "no ResourceSlices of gpu.gpudra.io for node gpu-9" in err_slices
    assert msgspec.json.decode(out_slices)["items"] == []
