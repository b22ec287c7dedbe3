"""A check on a real GPU node (not a pytest test): prepare and unprepare a whole-GPU claim with the NVML backend.

``python -m tests.claim_preparation.claim_prep_gpu_check OUT_DIR``: an embedded nats-server, the standalone
store, claim_preparation with ``--backend nvml``; one claim on the first GPU, no sharing (so no GPU setting is
changed), prepared through a NATS request, its CDI spec validated and copied to OUT_DIR, the device nodes it
names checked on the host, then unprepared. Prints what it saw; exits 1 on a failed check.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from libs.bus import Bus
from libs.devices import open_backend
from libs.kube import LocalKube
from libs.natsserver import EmbeddedNats
from tests.claim_preparation.claim_prep_support import prepare, service_settings, serving, store_claim, unprepare
from tests.support.nats_fixture import bootstrap, serve_with_auth, settings_for

NODE = "node-a"


async def main(out: Path) -> int:
    root = Path(tempfile.mkdtemp(prefix="cp-gpu-"))
    server = serve_with_auth(EmbeddedNats(root / "nats"), root / "trust")
    await server.start()
    await bootstrap(server.url)
    bus = await Bus.connect(settings_for(server.url, NODE), "check")
    problems: list[str] = []
    try:
        backend = await open_backend("nvml", NODE)
        inventory = await backend.inventory()
        print("GPUs:", [(g.name, g.uuid, g.product_name, g.mig_enabled) for g in inventory.gpus])
        print("MIG devices:", [d.name for d in inventory.mig_devices])
        print("mig-minors table:", Path("/proc/driver/nvidia-caps/mig-minors").is_file())
        gpu = min(inventory.gpus, key=lambda g: g.minor)
        kube = await LocalKube.open(bus.js)
        ref = await store_claim(kube, "gpu-check", [("gpu", gpu.name)])
        settings = service_settings(root, server.url, backend="nvml", cdi_dir=str(out / "cdi"))
        async with serving(server.url, settings, backend=backend):
            for _ in range(20):  # see claim_prep_support.until_answering
                try:
                    reply = await prepare(bus, ref)
                    break
                except Exception as exc:
                    print("retrying:", exc)
            result = reply.results[ref.uid]
            print("prepare:", result)
            specs = sorted((out / "cdi").glob("*.json"))
            if result.error or len(specs) != 1:
                problems.append(f"prepare failed: {result.error or specs}")
            else:
                spec = json.loads(specs[0].read_text())
                print("spec:", json.dumps(spec, indent=1))
                nodes = [
                    n["path"]
                    for e in [spec.get("containerEdits", {}), *(d["containerEdits"] for d in spec["devices"])]
                    for n in e.get("deviceNodes", [])
                ]
                for node in nodes:
                    print(f"  {node}: {'exists' if os.path.exists(node) else 'MISSING'}")
                shutil.copy(specs[0], out / "spec.json")
            print("unprepare:", (await unprepare(bus, ref)).results[ref.uid])
            if list((out / "cdi").glob("*.json")):
                problems.append("the spec is still there after unprepare")
        await backend.close()
    finally:
        await bus.close()
        await server.stop()
    print("PROBLEMS:" if problems else "OK", *problems)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(Path(sys.argv[1]))))
