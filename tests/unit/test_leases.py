"""Conformance suite for the LeaseStore contract (store/base.py): every backend must
pass it; add one to BACKENDS (a class that opens a store and drops its data: see
tests/backends.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Protocol

from backends import PostgresBackend, fresh_schema
from bloomr.store.base import LeaseStore
from bloomr.store.leases import LocalLeases
from bloomr.store.postgres import PostgresStore

SHORT = 0.2  # a ttl the tests outlive
LONG = 30.0  # a ttl no test outlives


class Store(LeaseStore, Protocol):
    async def close(self) -> None: ...


class _LocalStore(LocalLeases):
    async def close(self) -> None:
        pass


class LocalBackend:
    def __init__(self, tmp_path: Path) -> None:
        pass

    async def open(self) -> Store:
        return _LocalStore()

    async def drop(self) -> None:
        pass


BACKENDS: dict[str, Any] = {"local": LocalBackend, "postgres": PostgresBackend}


async def outlive(ttl: float) -> None:
    """Wait until a lease taken with `ttl` before this call has expired."""
    await asyncio.sleep(ttl * 1.5)


async def test_a_free_lease_is_taken(store: Store) -> None:
    assert await store.acquire("run:s1", "node-a", LONG)
    assert await store.holders("run:") == {"run:s1": "node-a"}


async def test_the_holder_renews(store: Store) -> None:
    assert await store.acquire("run:s1", "node-a", SHORT)
    assert await store.acquire("run:s1", "node-a", LONG)  # renewed: expires later now
    await outlive(SHORT)
    assert not await store.acquire("run:s1", "node-b", LONG)
    assert await store.holders("run:") == {"run:s1": "node-a"}


async def test_another_owner_is_refused_while_unexpired(store: Store) -> None:
    assert await store.acquire("run:s1", "node-a", LONG)
    assert not await store.acquire("run:s1", "node-b", LONG)
    assert not await store.acquire("run:s1", "node-b", SHORT)
    assert await store.holders("run:") == {"run:s1": "node-a"}


async def test_an_expired_lease_is_taken_over(store: Store) -> None:
    assert await store.acquire("run:s1", "node-a", SHORT)
    await outlive(SHORT)
    assert await store.holders("run:") == {}  # expired leases are nobody's
    assert await store.acquire("run:s1", "node-b", LONG)
    assert not await store.acquire("run:s1", "node-a", LONG)  # the old holder lost it
    assert await store.holders("run:") == {"run:s1": "node-b"}


async def test_only_the_holder_releases(store: Store) -> None:
    assert await store.acquire("run:s1", "node-a", LONG)
    await store.release("run:s1", "node-b")
    assert not await store.acquire("run:s1", "node-b", LONG)
    await store.release("run:s1", "node-a")
    assert await store.holders("run:") == {}
    assert await store.acquire("run:s1", "node-b", LONG)
    await store.release("run:never", "node-a")  # releasing a free key is a no-op


async def test_holders_by_literal_prefix(store: Store) -> None:
    assert await store.acquire("run:s1", "node-a", LONG)
    assert await store.acquire("run:s2", "node-b", LONG)
    assert await store.acquire("hook:w1", "node-a", LONG)
    assert await store.acquire("a_1", "node-a", LONG)
    assert await store.acquire("ab1", "node-a", LONG)
    assert await store.holders("run:") == {"run:s1": "node-a", "run:s2": "node-b"}
    assert await store.holders("hook:") == {"hook:w1": "node-a"}
    assert await store.holders("a_") == {"a_1": "node-a"}  # `_` is no wildcard
    assert await store.holders("%") == {}
    assert len(await store.holders("")) == 5


async def test_concurrent_acquires_have_one_winner(store: Store) -> None:
    owners = [f"node-{i}" for i in range(10)]
    won = await asyncio.gather(*(store.acquire("run:s1", o, LONG) for o in owners))
    assert sum(won) == 1
    assert await store.holders("run:") == {"run:s1": owners[won.index(True)]}


async def test_nodes_starting_at_once_race_for_one_lease() -> None:
    """Ten nodes (a store and a pool each) create the schema at the same moment, then
    all try to take the same key: the DDL does not trip over itself and one node wins."""
    async with fresh_schema() as schema:
        nodes = [PostgresStore(schema.dsn, schema.name) for _ in range(10)]
        try:
            await asyncio.gather(*(node.open() for node in nodes))
            won = await asyncio.gather(
                *(node.acquire("run:s1", f"node-{i}", LONG) for i, node in enumerate(nodes))
            )
            assert sum(won) == 1
            winner = f"node-{won.index(True)}"
            assert all([await node.holders("") == {"run:s1": winner} for node in nodes])
        finally:
            await asyncio.gather(*(node.close() for node in nodes))
