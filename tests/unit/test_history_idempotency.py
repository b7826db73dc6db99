"""The HistoryStore contract for idempotency keys (`AppendBatch.key`), on every backend
that keeps history: a key is looked up and recorded in the append's own atomic step,
so a repeat stores nothing and gets the first request's ids; another body under the
key is refused; keys are per stream, survive a reopen, and are forgotten by age, by
count (oldest first) and with their stream."""

from __future__ import annotations

from typing import Any, Protocol

import orjson

from backends import Backend, RedisBackend, SQLiteBackend
from bloomr.errors import BloomrError
from bloomr.idempotency import KeyPolicy, Repeat, fingerprint
from bloomr.model import Draft, Message
from bloomr.store.base import AppendBatch, Appended, HistoryStore
from queries import paging


class Store(HistoryStore, Protocol):
    async def close(self) -> None: ...


async def everything(store: Store, stream: str) -> list[Message]:
    return await store.page(paging(stream, "", None, None, 100_000))


BACKENDS: dict[str, Any] = {"sqlite": SQLiteBackend, "redis": RedisBackend}
S1, S2 = "idemAAAAAA", "idemBBBBBB"


def keyed(stream: str, key: str, *data: Any, keep: bool = True) -> AppendBatch:
    drafts = [Draft("", orjson.dumps(d)) for d in data]
    return AppendBatch(stream, drafts, keep, key, fingerprint(drafts))


async def one(store: Store, batch: AppendBatch) -> Appended:
    [result] = await store.append([batch])
    return result


def stored(result: Appended) -> list[Message]:
    assert isinstance(result, list), result
    return result


def ids(result: Appended) -> list[str]:
    return result.ids if isinstance(result, Repeat) else [m.id for m in stored(result)]


async def test_a_repeat_stores_nothing_and_gets_the_first_ids(store: Store) -> None:
    first = stored(await one(store, keyed(S1, "k1", "a", "b")))
    again = await one(store, keyed(S1, "k1", "a", "b"))
    assert again == Repeat([m.id for m in first])
    assert [m.data for m in await everything(store, S1)] == ["a", "b"]
    [after] = stored(await one(store, keyed(S1, "k2", "c")))
    assert after.seq == 3  # the repeat used no seq


async def test_another_body_under_a_key_is_refused(store: Store) -> None:
    await one(store, keyed(S1, "k1", "a"))
    refused = await one(store, keyed(S1, "k1", "b"))
    assert isinstance(refused, BloomrError) and refused.code == "idempotency_key_reused"
    assert [m.data for m in await everything(store, S1)] == ["a"]


async def test_a_key_twice_in_one_call_is_stored_once(store: Store) -> None:
    results = await store.append(
        [keyed(S1, "k", 1), keyed(S2, "k", 2), keyed(S1, "k", 1), keyed(S1, "k", 3)]
    )
    first, other_stream, repeat, refused = results
    assert repeat == Repeat(ids(first))
    assert stored(other_stream)[0].seq == 1  # keys are per stream
    assert isinstance(refused, BloomrError) and refused.code == "idempotency_key_reused"
    assert [m.data for m in await everything(store, S1)] == [1]


async def test_keys_without_history_still_answer_once(store: Store) -> None:
    first = stored(await one(store, keyed(S1, "k", "x", keep=False)))
    assert await one(store, keyed(S1, "k", "x", keep=False)) == Repeat(ids(first))
    [later] = stored(await one(store, keyed(S1, "other", "y", keep=False)))
    assert later.seq == 2


async def test_unkeyed_batches_are_never_repeats(store: Store) -> None:
    plain = AppendBatch(S1, [Draft("", b"1")], True)
    assert len(stored(await one(store, plain)) + stored(await one(store, plain))) == 2


async def test_a_key_survives_reopen(backend: Backend[Store]) -> None:
    store = await backend.open()
    first = stored(await one(store, keyed(S1, "k", "a")))
    await store.close()
    store = await backend.open()
    try:
        assert await one(store, keyed(S1, "k", "a")) == Repeat(ids(first))
    finally:
        await store.close()


async def test_keys_past_their_time_are_forgotten(store: Store) -> None:
    store.key_policy = KeyPolicy(ttl_ms=-1)  # type: ignore[attr-defined]  # expired at once
    await one(store, keyed(S1, "k", "a"))
    assert len(stored(await one(store, keyed(S1, "k", "b")))) == 1
    assert await store.trim(S1, 0, 1000) == 0  # trimming keys alone removes no message


async def test_a_stream_keeps_its_newest_keys_only(store: Store) -> None:
    store.key_policy = KeyPolicy(per_stream=2)  # type: ignore[attr-defined]
    first = {key: ids(await one(store, keyed(S1, key, key))) for key in ("a", "b", "c")}
    assert await one(store, keyed(S1, "c", "c")) == Repeat(first["c"])
    assert await one(store, keyed(S1, "b", "b")) == Repeat(first["b"])
    assert len(stored(await one(store, keyed(S1, "a", "a")))) == 1  # the oldest went


async def test_drop_forgets_the_keys(store: Store) -> None:
    await one(store, keyed(S1, "k", "a"))
    await store.drop(S1)
    [again] = stored(await one(store, keyed(S1, "k", "a")))
    assert again.seq == 1
