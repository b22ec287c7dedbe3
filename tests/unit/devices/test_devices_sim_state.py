import asyncio
import stat
import sys
from pathlib import Path

import pytest

from libs.devices.errors import StateError
from libs.devices.events import XidEvent
from libs.devices.model import TimeSliceInterval
from libs.devices.simulated import SimulatedBackend
from libs.devices.simulated.state import SimState, StateStore

REPO = Path(__file__).resolve().parents[3]


async def test_the_machine_survives_a_restart(tmp_path: Path) -> None:
    first = await SimulatedBackend.open("node-a", tmp_path, "dgx-h100-mig")
    device = await first.create_mig_device(3, "2g.20gb", 2)
    await first.inject_ecc(5, count=2)
    await first.set_time_slice(1, TimeSliceInterval.SHORT)
    await first.close()

    second = await SimulatedBackend.open("node-a", tmp_path)
    inventory = await second.inventory()
    assert [d.name for d in inventory.mig_devices] == [device.name]
    assert (await second.read_counters(5)).ecc_volatile_corrected == 2
    assert StateStore(tmp_path).read().sims[1].time_slice is TimeSliceInterval.SHORT  # type: ignore[union-attr]


async def test_another_process_sees_the_same_machine_and_feeds_our_events(tmp_path: Path) -> None:
    backend = await SimulatedBackend.open("node-a", tmp_path, "dgx-b200")
    events = backend.events()
    script = (
        "import asyncio, sys\n"
        "from libs.devices.simulated import SimulatedBackend\n"
        "async def main():\n"
        "    other = await SimulatedBackend.open('node-a', sys.argv[1])\n"
        "    await other.inject_xid('gpu-6', 119)\n"
        "    await other.inject_ecc(6, count=5)\n"
        "asyncio.run(main())\n"
    )
    process = await asyncio.create_subprocess_exec(sys.executable, "-c", script, str(tmp_path), cwd=REPO)
    assert await process.wait() == 0
    event = await asyncio.wait_for(anext(events), timeout=5)
    assert isinstance(event, XidEvent)
    assert (event.minor, event.xid) == (6, 119)
    assert (await backend.read_counters(6)).ecc_volatile_corrected == 5


async def test_concurrent_changes_from_many_tasks_are_all_kept(tmp_path: Path) -> None:
    backends = [await SimulatedBackend.open("node-a", tmp_path, "dgx-h100-mig") for _ in range(4)]
    await asyncio.gather(*(b.create_mig_device(minor, "7g.80gb", 0) for minor, b in enumerate(backends)))
    assert len((await backends[0].inventory()).mig_devices) == 4


async def test_state_files_are_private(tmp_path: Path) -> None:
    state_dir = tmp_path / "sim"
    backend = await SimulatedBackend.open("node-a", state_dir, "dgx-a100")
    await backend.inject_xid(0, 13)
    assert stat.S_IMODE(state_dir.stat().st_mode) == 0o700
    for name in ("state.json", "state.lock", "events.jsonl"):
        assert stat.S_IMODE((state_dir / name).stat().st_mode) == 0o600
    assert not list(state_dir.glob("*.tmp.*"))


async def test_a_state_dir_belongs_to_one_node_and_one_profile(tmp_path: Path) -> None:
    await SimulatedBackend.open("node-a", tmp_path, "dgx-a100")
    with pytest.raises(StateError, match="simulates node node-a, not node-b"):
        await SimulatedBackend.open("node-b", tmp_path)
    with pytest.raises(StateError, match="created with profile 'dgx-a100', not 'dgx-h100'"):
        await SimulatedBackend.open("node-a", tmp_path, "dgx-h100")
    await SimulatedBackend.open("node-a", tmp_path, "dgx-a100")


async def test_a_new_state_dir_needs_a_profile(tmp_path: Path) -> None:
    with pytest.raises(StateError, match="give a profile"):
        await SimulatedBackend.open("node-a", tmp_path / "empty")


async def test_a_corrupt_state_file_is_reported_not_overwritten(tmp_path: Path) -> None:
    await SimulatedBackend.open("node-a", tmp_path, "dgx-a100")
    (tmp_path / "state.json").write_text("{not json")
    with pytest.raises(StateError, match=r"state\.json is unreadable"):
        await SimulatedBackend.open("node-a", tmp_path)
    assert (tmp_path / "state.json").read_text() == "{not json"


async def test_operations_queued_together_are_applied_in_one_write_and_fail_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Like a driver, the machine does not make independent operations wait for each other's disk write; one
    that cannot be done (a placement already taken) fails without undoing the rest of its batch."""
    backend = await SimulatedBackend.open("node-a", tmp_path, "dgx-h100-mig")
    writes: list[SimState] = []
    store = backend._store
    real_write = store._write

    def counted(state: SimState) -> None:
        writes.append(state)
        real_write(state)

    monkeypatch.setattr(store, "_write", counted)
    creations = [backend.create_mig_device(minor, "3g.40gb", 0) for minor in range(8)]
    taken = backend.create_mig_device(0, "3g.40gb", 0)
    outcomes = await asyncio.gather(*creations, taken, return_exceptions=True)
    *created, refused = outcomes
    assert isinstance(refused, Exception)
    assert sorted(d.parent_minor for d in created if not isinstance(d, BaseException)) == list(range(8))
    assert len(writes) < len(outcomes)
    again = await SimulatedBackend.open("node-a", tmp_path)
    assert len((await again.inventory()).mig_devices) == 8
