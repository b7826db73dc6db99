"""The embedded backend's database: one SQLite file in WAL mode.

One writer connection (SQLite has one writer anyway) behind an asyncio lock, and a
small pool of reader connections: in WAL mode readers see a consistent snapshot from
their first read inside a transaction and never block the writer. `SQLiteDatabase`
holds the connections and the schema; `sqlite_history.SQLiteHistory` adds the history
on top of it, and `sqlite.SQLiteStore` the metadata on top of that."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import aiosqlite

from ..faults import SQLITE_FULL, sqlite_code, unavailable
from .reserve import DiskReserve

_SCHEMA = """
CREATE TABLE IF NOT EXISTS streams (id TEXT PRIMARY KEY, doc BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS tokens (
    id TEXT PRIMARY KEY, secret_hash TEXT NOT NULL UNIQUE, doc BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS heads (stream_id TEXT PRIMARY KEY, last_seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS messages (
    stream_id TEXT NOT NULL, seq INTEGER NOT NULL, id TEXT NOT NULL, channel TEXT NOT NULL,
    ts_ms INTEGER NOT NULL, data BLOB NOT NULL, PRIMARY KEY (stream_id, seq)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS messages_by_channel ON messages (stream_id, channel, seq);
CREATE TABLE IF NOT EXISTS ticks (
    stream_id TEXT NOT NULL, ts_ms INTEGER NOT NULL, first_seq INTEGER NOT NULL,
    PRIMARY KEY (stream_id, ts_ms)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS health (id INTEGER PRIMARY KEY, checked_ms INTEGER NOT NULL);
"""
# `messages` gets two more columns from the migrations below: n and ends (store/runs.py).
# The time index: a row per stream and millisecond, holding the first seq stored in it.
# Timestamps never decrease along seq, so a millisecond's messages are the seqs from its
# tick up to the next tick, which answers both "since a time" and "where is this id" (a
# UUIDv7 id carries its millisecond). An index on the messages' ts_ms (or id) would
# cost every insert a third of its speed; a tick costs one row per millisecond.
_MIGRATIONS = (
    # 1 -> 2: from an index on messages (stream_id, ts_ms) to ticks
    """
    INSERT OR IGNORE INTO ticks (stream_id, ts_ms, first_seq)
        SELECT stream_id, ts_ms, min(seq) FROM messages GROUP BY stream_id, ts_ms;
    DROP INDEX IF EXISTS messages_by_ts;
    DROP INDEX IF EXISTS messages_by_id;
    """,
    # 2 -> 3: a row holds a run of messages (store/runs.py); a row of before is a run of 1
    """
    ALTER TABLE messages ADD COLUMN n INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE messages ADD COLUMN ends BLOB;
    """,
    # 3 -> 4: each stream's history has an epoch, made with its head: a resume point
    # names the epoch it was taken in, so one from a history that was lost is refused
    """
    ALTER TABLE heads ADD COLUMN epoch TEXT NOT NULL DEFAULT '';
    UPDATE heads SET epoch = lower(hex(randomblob(8))) WHERE epoch = '';
    """,
    # 4 -> 5: idempotency keys, written in the append's transaction (sqlite_history.py):
    # a key, the fingerprint of what was published under it, the ids it got, and when;
    # each stream's head counts its keys
    """
    ALTER TABLE heads ADD COLUMN keys INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE IF NOT EXISTS idempotency (
        stream_id TEXT NOT NULL, key TEXT NOT NULL, fingerprint TEXT NOT NULL,
        ids BLOB NOT NULL, at_ms INTEGER NOT NULL, PRIMARY KEY (stream_id, key)) WITHOUT ROWID;
    CREATE INDEX IF NOT EXISTS idempotency_by_age ON idempotency (stream_id, at_ms);
    """,
    # 5 -> 6: JWT revocations (SPEC §7), each kept until the tokens it names expire
    """
    CREATE TABLE IF NOT EXISTS jwt_revocations (
        id TEXT PRIMARY KEY, doc BLOB NOT NULL, until REAL NOT NULL);
    """,
    # 6 -> 7: webhook outboxes keyed by the era of the history's epoch too (a history
    # that starts over reuses seqs): what was waiting is era 0, delivered first; the
    # eras table numbers epochs in the order the outboxes first saw them
    """
    CREATE TABLE IF NOT EXISTS webhook_outbox (
        webhook_id TEXT NOT NULL, seq INTEGER NOT NULL, envelope BLOB NOT NULL,
        PRIMARY KEY (webhook_id, seq)) WITHOUT ROWID;
    CREATE TABLE webhook_outbox_6 (
        webhook_id TEXT NOT NULL, era INTEGER NOT NULL, seq INTEGER NOT NULL,
        envelope BLOB NOT NULL, PRIMARY KEY (webhook_id, era, seq)) WITHOUT ROWID;
    INSERT INTO webhook_outbox_6 SELECT webhook_id, 0, seq, envelope FROM webhook_outbox;
    DROP TABLE webhook_outbox;
    ALTER TABLE webhook_outbox_6 RENAME TO webhook_outbox;
    CREATE TABLE IF NOT EXISTS outbox_eras (
        era INTEGER PRIMARY KEY AUTOINCREMENT, epoch TEXT NOT NULL UNIQUE);
    """,
)
_SCHEMA_VERSION = 1 + len(_MIGRATIONS)
_RECLAIM_PAGES = 256  # pages given back per step: the log grows by about that much

log = logging.getLogger("bloomr.store")
_READERS = 2

Row = tuple[Any, ...]
P = ParamSpec("P")
T = TypeVar("T")


def _run_to_completion(
    method: Callable[P, Coroutine[Any, Any, T]],
) -> Callable[P, Coroutine[Any, Any, T]]:
    """Store calls finish even when their caller is cancelled (a client went away): one
    cut off between BEGIN and COMMIT would leave a shared connection inside its
    transaction, and every later call on it would fail."""

    @functools.wraps(method)
    async def call(*args: P.args, **kwargs: P.kwargs) -> T:
        return await asyncio.shield(method(*args, **kwargs))

    return call


# NORMAL is durable across a crash of bloomr (WAL), though not across power loss.
# auto_vacuum first: it takes only on a database not written yet (WAL mode writes it);
# then space freed by trims and deletes can go back to the disk (`reclaim`), which is
# what lets the reserve be made again after a full disk.
_PRAGMAS = (
    "auto_vacuum=INCREMENTAL",
    "journal_mode=WAL",
    "synchronous=NORMAL",
    "busy_timeout=5000",
    # a log grown by a burst shrinks back once checkpointed
    "journal_size_limit=4194304",
    # some builds (Debian's) zero every freed page: deleting a stream would write as
    # much as it frees, which a full disk cannot take
    "secure_delete=FAST",
)


async def _connect(path: Path) -> aiosqlite.Connection:
    conn = await aiosqlite.connect(path, isolation_level=None)
    for pragma in _PRAGMAS:
        await conn.execute(f"PRAGMA {pragma}")
    return conn


def _connect_sync(path: Path, *extra_pragmas: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    for pragma in (*_PRAGMAS, *extra_pragmas):
        conn.execute(f"PRAGMA {pragma}")
    return conn


def is_disk_full(exc: BaseException) -> bool:
    if isinstance(exc, sqlite3.Error):
        return sqlite_code(exc) == SQLITE_FULL
    return isinstance(exc, OSError) and exc.errno == errno.ENOSPC


async def _freelist(conn: aiosqlite.Connection) -> int:
    """Free pages inside the file; 0 where they cannot be given back (a database made
    before auto_vacuum was set keeps them for its own reuse)."""
    async with conn.execute("PRAGMA auto_vacuum") as cursor:
        mode = await cursor.fetchone()
    if not mode or int(mode[0]) != 2:
        return 0
    async with conn.execute("PRAGMA freelist_count") as cursor:
        row = await cursor.fetchone()
    return int(row[0]) if row else 0


def _statements(script: str) -> list[str]:
    return [part.strip() for part in script.split(";") if part.strip()]


class SQLiteDatabase:
    """The connections and the schema, shared by the history and the metadata."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._writer: aiosqlite.Connection | None = None
        self._readers: asyncio.Queue[aiosqlite.Connection] = asyncio.Queue()
        self._write_lock = asyncio.Lock()
        self.reserve = DiskReserve(path.parent / "disk.reserve")

    async def open(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = await _connect(self._path)
        await self._migrate(self._writer)
        self.reserve.restore(force=True)
        for _ in range(_READERS):
            self._readers.put_nowait(await _connect(self._path))

    @staticmethod
    async def _migrate(conn: aiosqlite.Connection) -> None:
        await conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _statements(_SCHEMA):
                await conn.execute(statement)
            async with conn.execute("PRAGMA user_version") as cursor:
                row = await cursor.fetchone()
            version = max(int(row[0]) if row else 0, 1)
            for script in _MIGRATIONS[version - 1 :]:
                for statement in _statements(script):
                    await conn.execute(statement)
            await conn.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
        except BaseException:
            await conn.execute("ROLLBACK")
            raise
        await conn.execute("COMMIT")

    async def close(self) -> None:
        while not self._readers.empty():
            await self._readers.get_nowait().close()
        if self._writer is not None:
            await self._writer.close()
            self._writer = None

    @property
    def writer(self) -> aiosqlite.Connection:
        assert self._writer is not None, "store is not open"
        return self._writer

    @contextlib.asynccontextmanager
    async def _snapshot(self) -> AsyncIterator[aiosqlite.Connection]:
        """A reader connection inside one read transaction (one consistent snapshot)."""
        conn = await self._readers.get()
        try:
            await conn.execute("BEGIN")
            try:
                yield conn
            finally:
                await conn.execute("COMMIT")
        finally:
            self._readers.put_nowait(conn)

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._write_lock:
            conn = self.writer
            try:
                await conn.execute("BEGIN IMMEDIATE")
                yield conn
                await conn.execute("COMMIT")
            except BaseException as exc:
                # SQLite may have rolled back already (a full disk does): a ROLLBACK
                # then fails and would hide the real error, which is the one raised
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        await conn.execute("ROLLBACK")
                self.noticed(exc)
                raise

    def noticed(self, exc: BaseException) -> None:
        """A write failed with `exc`: a full disk gives up the reserve."""
        if is_disk_full(exc):
            self.reserve.release(str(exc))

    async def check_writable(self) -> None:
        """Raise `unavailable` (once guarded, for a failing write too) unless a write can
        be stored now: the disk is not full (the reserve is in place) and a tiny write
        commits."""
        if not self.reserve.restore():
            raise unavailable(f"the disk is full ({self.reserve.reason})")
        sql = "INSERT OR REPLACE INTO health (id, checked_ms) VALUES (1, ?)"
        await self._write(sql, (int(time.time() * 1000),))

    async def reclaim(self) -> None:
        """After a trim or a delete on a full disk: give the freed pages back to the
        disk (step by step, the log growing little each time), then make the reserve
        again if it fits."""
        if not self.reserve.full:
            return
        async with self._write_lock:
            conn = self.writer
            try:
                free = await _freelist(conn)
                while free > 0:
                    # stepped to its end: each step gives one page back
                    await conn.execute_fetchall(f"PRAGMA incremental_vacuum({_RECLAIM_PAGES})")
                    await conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                    free, before = await _freelist(conn), free
                    if free >= before:
                        break
                await conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error as exc:
                log.warning("giving space back to the disk failed: %s", exc)
        self.reserve.restore(force=True)

    async def _write(self, sql: str, params: Iterable[Any] = ()) -> int:
        async with self._transaction() as conn:
            cursor = await conn.execute(sql, tuple(params))
            return int(cursor.rowcount)

    async def _read(self, sql: str, params: Iterable[Any] = ()) -> list[Row]:
        """One statement: a snapshot of its own, no BEGIN/COMMIT round trips."""
        conn = await self._readers.get()
        try:
            return [tuple(r) for r in await conn.execute_fetchall(sql, tuple(params))]
        finally:
            self._readers.put_nowait(conn)
