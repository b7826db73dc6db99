"""The lease keeper (bloomr/leases.py): leases held while renewed, given up at ttl/2
without renewal, and the holder told before any other node may take the lease.

The renewing keeper runs over the in-memory LeaseStore (`LocalLeases`, which passes the
LeaseStore conformance suite in test_leases.py) and over PostgreSQL; a store outage is
a LeaseStore whose calls fail while `down` is set."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from backends import fresh_schema
from bloomr.leases import LocalLeaseKeeper, RenewingLeaseKeeper
from bloomr.store.base import LeaseStore
from bloomr.store.leases import LocalLeases
from bloomr.store.postgres import PostgresStore

TTL = 1.0


class Flaky:
    """A LeaseStore that fails every call while `down` (a store that cannot be reached)."""

    def __init__(self, store: LeaseStore) -> None:
        self.store = store
        self.down = False

    def _check(self) -> None:
        if self.down:
            raise ConnectionRefusedError("the lease store is down")

    async def acquire(self, key: str, owner: str, ttl_s: float) -> bool:
        self._check()
        return await self.store.acquire(key, owner, ttl_s)

    async def release(self, key: str, owner: str) -> None:
        self._check()
        await self.store.release(key, owner)

    async def holders(self, prefix: str) -> dict[str, str]:
        self._check()
        return await self.store.holders(prefix)


class Lost:
    """An `on_lost` that records when it was called and what the store said then."""

    def __init__(self, store: LeaseStore) -> None:
        self.store = store
        self.keys: list[str] = []
        self.holders_then: dict[str, str] = {}
        self.at: float | None = None
        self.left: float | None = None  # the seconds it was given to stop the work
        self.told = asyncio.Event()

    async def __call__(self, key: str, left: float) -> None:
        self.at = time.monotonic()
        self.left = left
        self.keys.append(key)
        self.holders_then = await self.store.holders("")
        self.told.set()


@pytest.fixture
async def local_store() -> LocalLeases:
    return LocalLeases()


@pytest.fixture
async def keeper(local_store: LocalLeases) -> AsyncIterator[RenewingLeaseKeeper]:
    made = RenewingLeaseKeeper(local_store, "node-a", TTL)
    await made.start()
    try:
        yield made
    finally:
        await made.stop()


async def test_the_local_keeper_holds_until_released() -> None:
    keeper = LocalLeaseKeeper()
    lost = Lost(LocalLeases())
    assert keeper.node is None
    assert await keeper.take("script:s1", lost)
    assert await keeper.take("script:s1", lost)  # already held
    assert keeper.holds("script:s1")
    assert await keeper.taken("script:") == {"script:s1"}
    await keeper.release("script:s1")
    assert not keeper.holds("script:s1") and await keeper.taken("") == set()
    assert lost.keys == []


async def test_a_renewed_lease_outlives_its_ttl(
    keeper: RenewingLeaseKeeper, local_store: LocalLeases
) -> None:
    lost = Lost(local_store)
    assert await keeper.take("script:s1", lost)
    await asyncio.sleep(TTL * 3)
    assert keeper.holds("script:s1")
    assert not await local_store.acquire("script:s1", "node-b", TTL)
    assert await keeper.taken("script:") == {"script:s1"}
    assert lost.keys == []


async def test_another_owner_is_refused_and_release_frees_at_once(
    keeper: RenewingLeaseKeeper, local_store: LocalLeases
) -> None:
    assert await local_store.acquire("script:s2", "node-b", 30)
    assert not await keeper.take("script:s2", Lost(local_store))
    assert await keeper.take("script:s1", Lost(local_store))
    await keeper.release("script:s1")
    assert not keeper.holds("script:s1")
    assert await local_store.acquire("script:s1", "node-b", TTL)


async def test_a_lease_given_to_another_owner_is_lost(
    keeper: RenewingLeaseKeeper, local_store: LocalLeases
) -> None:
    """As after a pause longer than the ttl: the store gave the lease to another node."""
    lost = Lost(local_store)
    assert await keeper.take("script:s1", lost)
    await local_store.release("script:s1", "node-a")
    assert await local_store.acquire("script:s1", "node-b", 30)
    await asyncio.wait_for(lost.told.wait(), TTL)
    assert lost.keys == ["script:s1"] and not keeper.holds("script:s1")


async def test_a_lease_not_renewed_for_half_its_ttl_is_given_up_before_expiry(
    local_store: LocalLeases,
) -> None:
    flaky = Flaky(local_store)
    keeper = RenewingLeaseKeeper(flaky, "node-a", TTL)
    await keeper.start()
    try:
        lost = Lost(local_store)
        assert await keeper.take("script:s1", lost)
        assert await keeper.take("webhooks:delivery", lost)
        flaky.down = True
        down_at = time.monotonic()
        await asyncio.wait_for(lost.told.wait(), TTL)
        await asyncio.sleep(0.05)  # the second key's holder is told on its own task
        assert sorted(lost.keys) == ["script:s1", "webhooks:delivery"]
        assert lost.at is not None
        # given up after ttl/2 since the last renewal (at most ttl/5 before the outage)
        assert TTL / 2 - TTL / 5 - 0.05 <= lost.at - down_at <= TTL / 2 + 0.25
        # and while the store still held them for this node: nobody else could run them
        assert lost.holders_then == {"script:s1": "node-a", "webhooks:delivery": "node-a"}
        # told how long it has: until the expiry (at least a ttl after the last
        # renewal), less a tenth of the ttl
        assert lost.left is not None and 0 < lost.left <= TTL * 0.9 - TTL / 2 + 0.01
        assert not keeper.holds("script:s1")
    finally:
        flaky.down = False
        await keeper.stop()


async def test_a_store_that_hangs_is_given_up_on_time(local_store: LocalLeases) -> None:
    """A renewal that never answers (a frozen store) does not delay the give-up."""

    class Frozen(Flaky):
        async def acquire(self, key: str, owner: str, ttl_s: float) -> bool:
            if self.down:
                await asyncio.sleep(3600)
            return await self.store.acquire(key, owner, ttl_s)

    frozen = Frozen(local_store)
    keeper = RenewingLeaseKeeper(frozen, "node-a", TTL)
    await keeper.start()
    try:
        lost = Lost(local_store)
        assert await keeper.take("script:s1", lost)
        frozen.down = True
        down_at = time.monotonic()
        await asyncio.wait_for(lost.told.wait(), TTL)
        assert lost.at is not None and lost.at - down_at <= TTL / 2 + 0.25
        assert lost.holders_then == {"script:s1": "node-a"}
    finally:
        frozen.down = False
        await keeper.stop()


async def test_two_nodes_on_postgres_hold_one_lease_while_renewed() -> None:
    async with fresh_schema() as schema:
        stores = [PostgresStore(schema.dsn, schema.name) for _ in range(2)]
        await asyncio.gather(*(s.open() for s in stores))
        keepers = [RenewingLeaseKeeper(s, f"node-{i}", TTL) for i, s in enumerate(stores)]
        try:
            for keeper in keepers:
                await keeper.start()
            lost = Lost(stores[0])
            assert await keepers[0].take("script:s1", lost)
            await asyncio.sleep(TTL * 3)
            assert not await keepers[1].take("script:s1", lost)
            assert keepers[0].holds("script:s1") and lost.keys == []
            await keepers[0].stop()  # a clean stop releases: the other takes it at once
            assert await keepers[1].take("script:s1", lost)
        finally:
            for keeper in keepers:
                await keeper.stop()
            await asyncio.gather(*(s.close() for s in stores))
