"""Conformance suite for the MetadataStore contract of store/base.py (streams and
tokens). Every backend must pass it: add one to BACKENDS (a name and a class that opens
a fresh, isolated store, can reopen the same data and drops it after the test: see
tests/backends.py) and the whole suite runs against it."""

from __future__ import annotations

import time
from typing import Any, Protocol

from backends import Backend, PostgresBackend, SQLiteBackend
from bloomr.jwt_tokens.revocations import JwtRevocation
from bloomr.model import Retention, Stream, Token, hash_secret
from bloomr.store.base import MetadataStore


class Store(MetadataStore, Protocol):
    async def close(self) -> None: ...


BACKENDS: dict[str, Any] = {"sqlite": SQLiteBackend, "postgres": PostgresBackend}


S1, S2 = "streamAAAA", "streamBBBB"


def stream(stream_id: str, **fields: Any) -> Stream:
    return Stream(id=stream_id, name=fields.pop("name", stream_id), **fields)


async def test_streams_create_get_list_update_delete(store: Store) -> None:
    a = stream(S1, retention=Retention("1h", 10), store_history=False)
    b = stream(S2, command=["python", "-u", "x.py"], env={"A": "1"}, restart="always")
    await store.create_stream(a)
    await store.create_stream(b)
    assert await store.get_stream(S1) == a
    assert await store.get_stream(S2) == b
    assert await store.get_stream("missing000") is None
    assert {s.id for s in await store.list_streams()} == {S1, S2}

    a.store_history = True
    a.name = "renamed"
    await store.update_stream(a)
    assert await store.get_stream(S1) == a

    assert await store.delete_stream(S1) is True
    assert await store.delete_stream(S1) is False
    assert await store.get_stream(S1) is None
    assert [s.id for s in await store.list_streams()] == [S2]


async def test_tokens_by_hash_list_and_delete(store: Store) -> None:
    t = Token(
        id="tok_a",
        name="reader",
        secret_hash=hash_secret("bt_secret"),
        streams=[S1],
        scopes=["subscribe", "publish"],
        expires_at="2030-01-01T00:00:00Z",
    )
    await store.create_token(t)
    assert await store.get_token_by_hash(hash_secret("bt_secret")) == t
    assert await store.get_token_by_hash(hash_secret("bt_other")) is None
    assert await store.get_token_by_hash("bt_secret") is None  # only by hash
    assert [x.id for x in await store.list_tokens()] == ["tok_a"]
    assert await store.delete_token("tok_a") == t
    assert await store.delete_token("tok_a") is None
    assert await store.get_token_by_hash(hash_secret("bt_secret")) is None
    assert await store.list_tokens() == []


async def test_metadata_survives_reopen(backend: Backend[Store]) -> None:
    created = stream(S1)
    store = await backend.open()
    await store.create_stream(created)
    await store.create_token(Token("tok_b", "", hash_secret("s"), ["*"], ["subscribe"]))
    await store.close()
    store = await backend.open()
    try:
        assert await store.get_stream(S1) == created
        assert [t.id for t in await store.list_tokens()] == ["tok_b"]
    finally:
        await store.close()


async def test_tokens_keep_their_channels(store: Store) -> None:
    scoped = Token("tok_c", "", hash_secret("c"), ["*"], ["subscribe"], channels=["", "build.*"])
    await store.create_token(scoped)
    assert await store.get_token_by_hash(hash_secret("c")) == scoped
    assert [t.channels for t in await store.list_tokens()] == [["", "build.*"]]


async def test_jwt_revocations_are_kept_until_they_expire(backend: Backend[Store]) -> None:
    now = time.time()
    by_jti = JwtRevocation(jti="j-1", sub=None, issued_before=None, until=now + 3600)
    by_sub = JwtRevocation(jti=None, sub="alice", issued_before=now, until=now + 3600)
    expired = JwtRevocation(jti="old", sub=None, issued_before=None, until=now - 1)
    store = await backend.open()
    for rule in (expired, by_jti, by_sub, by_jti):  # the same one twice is stored once
        await store.save_jwt_revocation(rule)
    await store.close()
    store = await backend.open()  # a restart (or another node) still refuses them
    try:
        kept = await store.jwt_revocations()
        assert sorted(kept, key=lambda r: r.id) == sorted([by_jti, by_sub], key=lambda r: r.id)
    finally:
        await store.close()
