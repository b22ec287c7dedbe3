"""Per-GPU locks: different GPUs in parallel, the same GPU in turn, overlapping sets without deadlock."""

from __future__ import annotations

import asyncio

from services.claim_preparation.locks import KeyedLocks

BOUND = 5.0
"""A broken lock shows as a wait that never ends: every wait here is bounded, so the test fails instead."""


async def _hold_until(
    locks: KeyedLocks,
    keys: list[str],
    entered: asyncio.Event,
    release: asyncio.Event,
    waiting: asyncio.Event | None = None,
) -> None:
    async with locks.hold(keys, (lambda _key: waiting.set()) if waiting else None):
        entered.set()
        await release.wait()


async def test_different_keys_are_held_at_the_same_time() -> None:
    locks = KeyedLocks()
    first_in, second_in, release = asyncio.Event(), asyncio.Event(), asyncio.Event()
    first = asyncio.create_task(_hold_until(locks, ["gpu-0"], first_in, release))
    await first_in.wait()
    second = asyncio.create_task(_hold_until(locks, ["gpu-1"], second_in, release))
    async with asyncio.timeout(BOUND):
        await second_in.wait()  # entered while the first still holds gpu-0
    assert (locks.locked("gpu-0"), locks.locked("gpu-1")) == (True, True)
    release.set()
    await asyncio.gather(first, second)


async def test_the_same_key_is_held_in_turn() -> None:
    locks = KeyedLocks()
    first_in, second_in, release_first, release_second = (asyncio.Event() for _ in range(4))
    first = asyncio.create_task(_hold_until(locks, ["gpu-0", "gpu-1"], first_in, release_first))
    await first_in.wait()
    waiting = asyncio.Event()
    second = asyncio.create_task(_hold_until(locks, ["gpu-1"], second_in, release_second, waiting))
    async with asyncio.timeout(BOUND):
        await waiting.wait()  # the lock tells a waiter it waits: the second is blocked on gpu-1 now
    assert not second_in.is_set()
    assert locks.locked("gpu-1")
    release_first.set()
    async with asyncio.timeout(BOUND):
        await second_in.wait()
    assert not locks.locked("gpu-0")
    release_second.set()
    await asyncio.gather(first, second)
    assert not locks.locked("gpu-1")


async def test_overlapping_sets_in_any_order_do_not_deadlock() -> None:
    locks = KeyedLocks()
    order: list[str] = []

    async def claim(name: str, keys: list[str]) -> None:
        async with locks.hold(keys):
            order.append(name)
            await asyncio.sleep(0)

    async with asyncio.timeout(BOUND):
        await asyncio.gather(
            *(claim(f"c{i}", ["gpu-0", "gpu-1", "gpu-2"][:: 1 if i % 2 else -1][: 2 + i % 2]) for i in range(20))
        )
    assert len(order) == 20
    assert len(locks) == 0  # nothing kept for keys nobody holds


async def test_a_cancelled_waiter_leaves_the_lock_usable() -> None:
    locks = KeyedLocks()
    entered, release = asyncio.Event(), asyncio.Event()
    holder = asyncio.create_task(_hold_until(locks, ["gpu-0"], entered, release))
    await entered.wait()
    waiting = asyncio.Event()
    waiter = asyncio.create_task(_hold_until(locks, ["gpu-0"], asyncio.Event(), asyncio.Event(), waiting))
    async with asyncio.timeout(BOUND):
        await waiting.wait()
    waiter.cancel()
    release.set()
    await holder
    again = asyncio.Event()
    release_again = asyncio.Event()
    release_again.set()
    async with asyncio.timeout(BOUND):
        await _hold_until(locks, ["gpu-0"], again, release_again)
    assert again.is_set()
    assert not locks.locked("gpu-0")
