"""History in the embedded SQLite database: appends, replays, pages and trims.

A row of `messages` holds a run of a batch's messages of one channel (`runs.py`)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from itertools import chain
from pathlib import Path
from typing import Any

import aiosqlite

from ..errors import BloomrError
from ..faults import as_error, unavailable
from ..idempotency import KeyPolicy
from ..model import Message, id_at, id_place, new_messages, now_ms, uuid7_ms
from ..replay import AfterId, AfterSeq, ReplayStart, Since
from .base import AppendBatch, Appended, HistoryGap, HistoryQuery, ReplaySlice
from .runs import RUN_COLUMNS, Run, run_messages, runs_of, without_first
from .sqlite_db import Row, SQLiteDatabase, _connect_sync, _run_to_completion
from .sqlite_keys import KeyBook, forget_old_keys
from .sqlite_outbox import RoutesByStream
from .sqlite_outbox import write as write_outbox

log = logging.getLogger("bloomr.store")

# A group of appends this small is stored on the event loop itself: its insert and
# commit take tens of microseconds, less than a hop to the appender thread and back
# (which also has to win the GIL back from the loop). Larger groups go to the thread,
# so that SQLite's work overlaps with the loop's.
_INLINE_MESSAGES = 64
# The appender never checkpoints (a checkpoint writes and syncs the database file,
# milliseconds the event loop must not wait for): a connection of its own does, on
# its own thread, once this many messages have been appended since the last one.
_CHECKPOINT_EVERY = 2_000
# ... or once this many bytes of messages were: big messages would otherwise grow the
# log by megabytes between checkpoints, and a log can only shrink once its content fits
# in the database file (on a full disk, it never would)
_CHECKPOINT_BYTES = 1 << 20


def _checkpoint(conn: sqlite3.Connection) -> None:
    # PASSIVE: copies what it can without waiting for readers or blocking the writer
    try:
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
    except sqlite3.Error:  # the next one catches up; appends are unaffected
        log.warning("checkpointing the write-ahead log failed", exc_info=True)


_ROWS_PER_INSERT = 128
_INSERT = f"INSERT INTO messages ({RUN_COLUMNS}) VALUES "
_ROW = "(?, ?, ?, ?, ?, ?, ?, ?)"
_INSERT_FULL = _INSERT + ", ".join([_ROW] * _ROWS_PER_INSERT)


def _insert_runs(conn: sqlite3.Connection, runs: list[Run]) -> None:
    """Many rows per statement: sqlite3 releases the GIL around each statement it steps
    and must win it back after, which, one row at a time, made the appender wait on the
    event loop's thread (a group of many single-message publishes is many rows)."""
    full = len(runs) - len(runs) % _ROWS_PER_INSERT
    blocks = (
        chain.from_iterable(runs[i : i + _ROWS_PER_INSERT])
        for i in range(0, full, _ROWS_PER_INSERT)
    )
    conn.executemany(_INSERT_FULL, (list(block) for block in blocks))
    if full < len(runs):
        rest = runs[full:]
        conn.execute(_INSERT + ", ".join([_ROW] * len(rest)), list(chain.from_iterable(rest)))


_Group = tuple[list[Appended], dict[str, int]]  # a group commit's outcomes, and new heads


def _in_transaction(
    conn: sqlite3.Connection, work: Callable[[sqlite3.Connection], _Group]
) -> _Group:
    """A whole group commit in one call on the appender thread (every thread hop costs
    a publish more latency than the insert itself), in one transaction with the
    idempotency keys it looks up and records and the webhook outbox items it makes."""
    try:
        conn.execute("BEGIN IMMEDIATE")
        done = work(conn)
        conn.execute("COMMIT")
    except BaseException:
        # SQLite may have rolled back already (a full disk does): a ROLLBACK then
        # fails, and its error would hide the real one
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        raise
    return done


def _append_in_transaction(
    conn: sqlite3.Connection,
    *,
    batches: Sequence[AppendBatch],
    known: dict[str, int],
    keys: KeyPolicy,
    routes: RoutesByStream,
) -> _Group:
    heads: dict[str, int] = {}
    results: list[Appended] = []
    runs: list[Run] = []
    ticks: list[Row] = []
    book: KeyBook | None = None
    outbox: list[tuple[str, Sequence[tuple[str, str]], list[Message]]] = []
    for batch in batches:
        if batch.key is not None and batch.drafts:
            book = book or KeyBook(conn, keys)
            if (answer := book.lookup(batch)) is not None:
                results.append(answer)
                continue
        head = heads.get(batch.stream_id, known.get(batch.stream_id))
        if head is None:
            found = conn.execute(
                "SELECT last_seq FROM heads WHERE stream_id = ?", (batch.stream_id,)
            ).fetchone()
            head = int(found[0]) if found else 0
        messages = new_messages(batch.stream_id, batch.drafts, head + 1)
        heads[batch.stream_id] = head + len(messages)
        results.append(messages)
        if batch.keep and messages:
            runs += runs_of(messages)
            ticks.append((batch.stream_id, messages[0].ts_ms, messages[0].seq))  # one ms each
        if book is not None and batch.key is not None and messages:
            book.record(batch, messages)
        if routes and (hooks := routes.get(batch.stream_id)):  # the stream has webhooks
            outbox.append((batch.stream_id, hooks, messages))
    _insert_runs(conn, runs)
    # a millisecond's first seq: an earlier batch of that millisecond already has it
    conn.executemany("INSERT OR IGNORE INTO ticks VALUES (?, ?, ?)", ticks)
    conn.executemany(
        "INSERT INTO heads (stream_id, last_seq, epoch) "
        "VALUES (?, ?, lower(hex(randomblob(8)))) "
        "ON CONFLICT (stream_id) DO UPDATE SET last_seq = excluded.last_seq",
        list(heads.items()),
    )
    if book is not None:
        book.write()
    for stream_id, hooks, messages in outbox:  # after the heads: a new one has its epoch
        write_outbox(conn, stream_id, hooks, messages)
    return results, heads


class SQLiteHistory(SQLiteDatabase):
    """Implements HistoryStore. Appends (the hot path) use a plain sqlite3 connection on
    a thread of their own; a checkpointer has another."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self._heads: dict[str, int] = {}
        self._appender = ThreadPoolExecutor(1, thread_name_prefix="bloomr-append")
        self._append_conn: sqlite3.Connection | None = None
        self._checkpointer = ThreadPoolExecutor(1, thread_name_prefix="bloomr-checkpoint")
        self._checkpoint_conn: sqlite3.Connection | None = None
        self._checkpoint_task: asyncio.Future[None] | None = None
        self._since_checkpoint = 0
        self._since_checkpoint_bytes = 0
        self.key_policy = KeyPolicy()  # idempotency keys: how long, how many per stream
        # the webhook store's routes: each append writes its outbox items (sqlite_outbox)
        self.outbox_routes: RoutesByStream = {}

    async def open(self) -> None:
        await super().open()
        loop = asyncio.get_running_loop()
        self._append_conn = await loop.run_in_executor(
            self._appender, _connect_sync, self._path, "wal_autocheckpoint=0"
        )
        self._checkpoint_conn = await loop.run_in_executor(
            self._checkpointer, _connect_sync, self._path
        )

    async def close(self) -> None:
        await super().close()
        loop = asyncio.get_running_loop()
        if self._checkpoint_task is not None:
            await self._checkpoint_task
        if self._append_conn is not None:
            conn, self._append_conn = self._append_conn, None
            await loop.run_in_executor(self._appender, conn.close)
        if self._checkpoint_conn is not None:
            conn, self._checkpoint_conn = self._checkpoint_conn, None
            await loop.run_in_executor(self._checkpointer, conn.close)

    # -- history ----------------------------------------------------------------------

    def _known_heads(self, batches: Sequence[AppendBatch]) -> dict[str, int]:
        heads = self._heads
        return {b.stream_id: heads[b.stream_id] for b in batches if b.stream_id in heads}

    async def append(self, batches: Sequence[AppendBatch]) -> list[Appended]:
        done = self.try_append_now(batches)
        if done is not None:
            return done
        return await self._append_later(batches, sum(len(b.drafts) for b in batches))

    def try_append_now(self, batches: Sequence[AppendBatch]) -> list[Appended] | None:
        if not self.reserve.restore():  # the disk is full: what is left is for deletes
            return _refused(batches, self.reserve.reason)
        count = sum(len(b.drafts) for b in batches)
        if count <= _INLINE_MESSAGES and not self._write_lock.locked():
            # No await from here to the end: nothing can cut in, and no shield (an extra
            # task, two more turns of the loop for every publish) is needed.
            return self._append_now(batches, count)
        return None

    @_run_to_completion
    async def _append_later(self, batches: Sequence[AppendBatch], count: int) -> list[Appended]:
        async with self._write_lock:
            if not self.reserve.restore():
                return _refused(batches, self.reserve.reason)
            if count <= _INLINE_MESSAGES:
                return self._append_now(batches, count)
            call = functools.partial(
                _in_transaction, self._conn_for_append(), self._group_work(batches)
            )
            try:
                ordered, heads = await asyncio.get_running_loop().run_in_executor(
                    self._appender, call
                )
            except Exception as exc:
                return self._failed(batches, exc)
            return self._appended(ordered, heads, count)

    def _append_now(self, batches: Sequence[AppendBatch], count: int) -> list[Appended]:
        try:
            ordered, heads = _in_transaction(self._conn_for_append(), self._group_work(batches))
        except Exception as exc:
            return self._failed(batches, exc)
        return self._appended(ordered, heads, count)

    def _group_work(self, batches: Sequence[AppendBatch]) -> Callable[[sqlite3.Connection], _Group]:
        """The group commit of `batches`, to run in a transaction (`_in_transaction`)."""
        return functools.partial(
            _append_in_transaction,
            batches=batches,
            known=self._known_heads(batches),
            keys=self.key_policy,
            routes=self.outbox_routes,
        )

    def _failed(self, batches: Sequence[AppendBatch], exc: Exception) -> list[Appended]:
        """The whole group fails: no seq is consumed."""
        self.noticed(exc)
        error = as_error(exc, "storing messages")
        return [error for _ in batches]

    def _conn_for_append(self) -> sqlite3.Connection:
        assert self._append_conn is not None, "store is not open"
        return self._append_conn

    def _appended(
        self, ordered: list[Appended], heads: dict[str, int], count: int
    ) -> list[Appended]:
        self._heads.update(heads)
        size = sum(m.size for batch in ordered if isinstance(batch, list) for m in batch)
        self._checkpoint_after(count, size)
        return list(ordered)

    def _checkpoint_after(self, appended: int, size: int) -> None:
        self._since_checkpoint += appended
        self._since_checkpoint_bytes += size
        if (
            self._since_checkpoint < _CHECKPOINT_EVERY
            and self._since_checkpoint_bytes < _CHECKPOINT_BYTES
        ):
            return
        if self._checkpoint_task is not None and not self._checkpoint_task.done():
            return
        conn = self._checkpoint_conn
        assert conn is not None, "store is not open"
        self._since_checkpoint = self._since_checkpoint_bytes = 0
        loop = asyncio.get_running_loop()
        self._checkpoint_task = loop.run_in_executor(self._checkpointer, _checkpoint, conn)

    @_run_to_completion
    async def replay(self, query: HistoryQuery) -> ReplaySlice:
        async with self._snapshot() as conn:
            q = _Query(conn, query.stream_id, query.channel)
            head, epoch = await q.head()
            start, window, unknown = query.start, query.window, False
            if isinstance(start, AfterId):
                if await q.seq_of(start.id) is None:
                    unknown, start, window = True, None, query.newest
            elif isinstance(start, AfterSeq) and not await q.holds_after(start, head, epoch):
                unknown, start, window = True, None, query.newest
            first, boundary = await q.first_seq(start, window)
            matched = await q.count_from(first)
            newest = matched if query.newest is None else min(query.newest, matched)
            if matched > newest:
                if boundary is _LAZY:
                    boundary = await q.id_before(first)
                # the newest of a suffix of the channel are the channel's newest
                first = (await q.first_seq(None, newest))[0]
            messages = await q.oldest_from(first, query.limit, head, query.max_bytes)
            return ReplaySlice(
                messages=messages[:newest],
                matched=matched,
                backfill_after_id=None if boundary is _LAZY else boundary,
                head_seq=head,
                unknown_id=unknown,
                epoch=epoch,
                count=newest,
            )

    @_run_to_completion
    async def head(self, stream_id: str) -> tuple[int, str]:
        """The stream's last seq and its history's epoch."""
        sql = "SELECT last_seq, epoch FROM heads WHERE stream_id = ?"
        rows = await self._read(sql, (stream_id,))
        return (int(rows[0][0]), str(rows[0][1])) if rows else (0, "")

    @_run_to_completion
    async def page(self, query: HistoryQuery) -> list[Message]:
        async with self._snapshot() as conn:
            q = _Query(conn, query.stream_id, query.channel)
            start, first = query.start, 0
            if isinstance(start, AfterId):
                seq = await q.seq_of(start.id)
                if seq is None:
                    raise BloomrError(
                        "unknown_message_id", f"message {start.id} is not in this stream's history"
                    )
                first = seq + 1
            elif isinstance(start, AfterSeq):
                head, epoch = await q.head()
                if start.epoch != epoch:
                    return []  # that history is gone (the stream was dropped)
                if query.exact and not await q.holds_after(start, head, epoch):
                    raise HistoryGap(f"messages after seq {start.seq} were trimmed")
                first = start.seq + 1
            elif isinstance(start, Since):
                first = await q.first_seq_since(start.ts_ms)
            if query.since_ms is not None:
                first = max(first, await q.first_seq_since(query.since_ms))
            until = _FOREVER if query.until_seq is None else query.until_seq
            return await q.oldest_from(first, query.limit, until, query.max_bytes)

    @_run_to_completion
    async def drop(self, stream_id: str) -> None:
        async with self._transaction() as conn:
            for table in ("messages", "ticks", "heads", "idempotency"):
                await conn.execute(f"DELETE FROM {table} WHERE stream_id = ?", (stream_id,))
            self._heads.pop(stream_id, None)
        await self.reclaim()

    @_run_to_completion
    async def trim(self, stream_id: str, min_ts_ms: int, max_messages: int) -> int:
        async with self._transaction() as conn:
            trim = _Trim(conn, stream_id)
            removed = await trim.older_than(min_ts_ms) + await trim.beyond(max_messages)
            # ticks before the oldest message left describe nothing any more
            await conn.execute(
                "DELETE FROM ticks WHERE stream_id = ?1 AND ts_ms < coalesce((SELECT ts_ms "
                "FROM messages WHERE stream_id = ?1 ORDER BY seq LIMIT 1), ?2)",
                (stream_id, _FOREVER),
            )
            await forget_old_keys(conn, stream_id, now_ms() - self.key_policy.ttl_ms)
        if removed:
            await self.reclaim()
        return removed


class _Trim:
    """Trimming one stream's history, inside the caller's write transaction."""

    def __init__(self, conn: aiosqlite.Connection, stream_id: str) -> None:
        self.conn, self.stream_id = conn, stream_id

    async def older_than(self, min_ts_ms: int) -> int:
        """Messages of milliseconds before `min_ts_ms`: whole runs, as a run never spans
        two milliseconds."""
        sql = (
            "SELECT first_seq FROM ticks WHERE stream_id = ? AND ts_ms >= ? ORDER BY ts_ms LIMIT 1"
        )
        rows = await self.conn.execute_fetchall(sql, (self.stream_id, min_ts_ms))
        return await self._before(next(iter(rows))[0] if rows else _FOREVER)

    async def beyond(self, max_messages: int) -> int:
        """All but the newest `max_messages`, cutting the run that holds the boundary."""
        sql = (
            f"SELECT {RUN_COLUMNS}, acc FROM (SELECT *, sum(n) OVER "
            "(ORDER BY seq DESC ROWS UNBOUNDED PRECEDING) AS acc FROM (SELECT * FROM messages "
            "WHERE stream_id = ?1 ORDER BY seq DESC LIMIT ?2 + 1)) "
            "WHERE acc > ?2 ORDER BY seq DESC LIMIT 1"
        )
        rows = list(await self.conn.execute_fetchall(sql, (self.stream_id, max_messages)))
        if not rows:
            return 0
        *run, acc = rows[0]
        seq, n = run[4], run[6]
        drop = acc - max_messages  # the run's oldest messages, past the newest max_messages
        if drop == n:
            return await self._before(seq + 1)
        removed = await self._before(seq)
        await self.conn.execute(
            f"UPDATE messages SET ({RUN_COLUMNS}) = (?, ?, ?, ?, ?, ?, ?, ?) "
            "WHERE stream_id = ? AND seq = ?",
            (*without_first(tuple(run), drop), self.stream_id, seq),
        )
        return removed + int(drop)

    async def _before(self, seq: int) -> int:
        """Delete the rows before `seq`; how many messages they held."""
        params = (self.stream_id, seq)
        where = "WHERE stream_id = ? AND seq < ?"
        rows = await self.conn.execute_fetchall(
            f"SELECT coalesce(sum(n), 0) FROM messages {where}", params
        )
        await self.conn.execute(f"DELETE FROM messages {where}", params)
        return int(next(iter(rows))[0])


def _refused(batches: Sequence[AppendBatch], reason: str) -> list[Appended]:
    error = unavailable(f"the disk is full ({reason}): publishes wait for room")
    return [error for _ in batches]


_FOREVER = 1 << 62  # past any seq or millisecond
_MESSAGE_OVERHEAD = Message("", "", "", 0, 0, b"").size  # what Message.size adds to the data
_LAZY: Any = object()  # "the boundary id, if needed, is the channel message before `first`"


def _within(messages: list[Message], max_bytes: int) -> list[Message]:
    """The first of `messages`, up to the one that passes `max_bytes` (a run read whole
    may hold more than a page)."""
    size = 0
    for i, message in enumerate(messages):
        size += message.size
        if size >= max_bytes:
            return messages[: i + 1]
    return messages


class _Query:
    """The read queries of one snapshot, for one stream and channel. A row is a run of
    messages (store/runs.py): a query finds rows, and a boundary seq may fall inside
    one, the run that starts before it and reaches it (`straddling`)."""

    def __init__(self, conn: aiosqlite.Connection, stream_id: str, channel: str) -> None:
        self.conn, self.stream_id, self.channel = conn, stream_id, channel
        self._before: dict[int, Run | None] = {}

    async def _rows(self, sql: str, *params: Any) -> list[Row]:
        return [tuple(r) for r in await self.conn.execute_fetchall(sql, params)]

    async def head(self) -> tuple[int, str]:
        """The stream's last seq and its history's epoch."""
        sql = "SELECT last_seq, epoch FROM heads WHERE stream_id = ?"
        rows = await self._rows(sql, self.stream_id)
        return (int(rows[0][0]), str(rows[0][1])) if rows else (0, "")

    async def holds_after(self, start: AfterSeq, head: int, epoch: str) -> bool:
        """Whether every stored message after `start` is still here: same epoch (or a
        start before the first message ever), and nothing after it trimmed."""
        if start.epoch != epoch and not (start.epoch == "" and start.seq == 0):
            return False
        if start.seq >= head:
            return True
        sql = "SELECT seq FROM messages WHERE stream_id = ? ORDER BY seq LIMIT 1"
        rows = await self._rows(sql, self.stream_id)
        return bool(rows) and int(rows[0][0]) <= start.seq + 1

    async def seq_of(self, message_id: str) -> int | None:
        """Through the ticks: a UUIDv7 id carries its message's millisecond, whose
        messages are one range of seqs; ids grow with seqs, so the run that may hold it
        is the last one there whose first id is not past it."""
        ts_ms = uuid7_ms(message_id)
        if ts_ms is None:
            return None
        sql = (
            "SELECT seq, id, n FROM messages WHERE stream_id = ?1 AND seq >= (SELECT first_seq "
            "FROM ticks WHERE stream_id = ?1 AND ts_ms = ?2) AND seq < coalesce((SELECT "
            "first_seq FROM ticks WHERE stream_id = ?1 AND ts_ms > ?2 ORDER BY ts_ms LIMIT 1), "
            "?4) AND id <= ?3 ORDER BY seq DESC LIMIT 1"
        )
        rows = await self._rows(sql, self.stream_id, ts_ms, message_id, _FOREVER)
        if not rows:
            return None
        seq, first_id, n = rows[0]
        place = id_place(first_id, message_id)
        return int(seq) + place if place is not None and place < n else None

    async def first_seq_since(self, ts_ms: int) -> int:
        """Timestamps never decrease along seq, so the first message at or after `ts_ms`
        (any channel) starts the matching range. It starts a run too: a run is one
        millisecond's."""
        sql = (
            "SELECT first_seq FROM ticks WHERE stream_id = ? AND ts_ms >= ? ORDER BY ts_ms LIMIT 1"
        )
        rows = await self._rows(sql, self.stream_id, ts_ms)
        return int(rows[0][0]) if rows else (await self.head())[0] + 1

    async def first_seq(self, start: ReplayStart | None, window: int | None) -> tuple[int, Any]:
        """Where the matching set starts, and the backfill boundary id (or _LAZY)."""
        if isinstance(start, AfterId):
            seq = await self.seq_of(start.id)
            assert seq is not None
            return seq + 1, start.id
        if isinstance(start, Since):
            return await self.first_seq_since(start.ts_ms), _LAZY
        if isinstance(start, AfterSeq):
            return start.seq + 1, _LAZY
        if window is None:
            return 0, None
        # The channel's newest `window` messages: the boundary is the message before them,
        # in the run where the count of messages, newest first, passes `window`. Each
        # row holds a message at least, so window + 1 rows are enough to look at.
        sql = (
            "SELECT seq, id, acc FROM (SELECT seq, id, sum(n) OVER (ORDER BY seq DESC ROWS "
            "UNBOUNDED PRECEDING) AS acc FROM (SELECT seq, id, n FROM messages WHERE "
            "stream_id = ?1 AND channel = ?2 ORDER BY seq DESC LIMIT ?3 + 1)) "
            "WHERE acc > ?3 ORDER BY seq DESC LIMIT 1"
        )
        rows = await self._rows(sql, self.stream_id, self.channel, window)
        if not rows:
            return 0, None
        seq, first_id, acc = rows[0]
        place = acc - 1 - window  # newest first, the run's message at `place` is number window
        return seq + place + 1, id_at(first_id, place)

    async def last_before(self, first: int) -> Run | None:
        """The channel's last run that starts before `first` (read once per snapshot)."""
        if first not in self._before:
            sql = (
                f"SELECT {RUN_COLUMNS} FROM messages WHERE stream_id = ? AND channel = ? "
                "AND seq < ? ORDER BY seq DESC LIMIT 1"
            )
            rows = await self._rows(sql, self.stream_id, self.channel, first)
            self._before[first] = rows[0] if rows else None
        return self._before[first]

    async def straddling(self, first: int) -> Run | None:
        """The channel's run that starts before `first` and reaches it, if one does."""
        run = await self.last_before(first)
        return run if run is not None and run[4] + run[6] > first else None

    async def count_from(self, first: int) -> int:
        sql = (
            "SELECT coalesce(sum(n), 0) FROM messages WHERE stream_id = ? AND channel = ? "
            "AND seq >= ?"
        )
        rows = await self._rows(sql, self.stream_id, self.channel, first)
        run = await self.straddling(first)
        return int(rows[0][0]) + (run[4] + run[6] - first if run else 0)

    async def oldest_from(
        self, first: int, limit: int, until: int = _FOREVER, max_bytes: int | None = None
    ) -> list[Message]:
        """The channel's oldest `limit` messages with first <= seq <= until, ending with
        the row whose messages pass `max_bytes` of `Message.size`."""
        messages: list[Message] = []
        if (run := await self.straddling(first)) is not None:
            start = first - run[4]
            messages += run_messages(run, start, start + min(limit, until - first + 1))
        size = sum(m.size for m in messages)
        if max_bytes is not None and messages and size >= max_bytes:
            return _within(messages, max_bytes)
        if max_bytes is not None:
            until = min(until, await self._last_within(first, until, limit, max_bytes - size))
        sql = (
            f"SELECT {RUN_COLUMNS} FROM messages WHERE stream_id = ? AND channel = ? "
            "AND seq >= ? AND seq <= ? ORDER BY seq LIMIT ?"
        )
        for run in await self._rows(sql, self.stream_id, self.channel, first, until, limit):
            if len(messages) >= limit:
                break
            messages += run_messages(run, 0, limit - len(messages))
        return messages if max_bytes is None else _within(messages, max_bytes)

    async def _last_within(self, first: int, until: int, limit: int, max_bytes: int) -> int:
        """The seq of the row whose messages, with the rows before it from `first`, pass
        `max_bytes` (`until` if they never do). length() reads a row's size, not its data."""
        sql = (
            "SELECT seq FROM (SELECT seq, sum(size) OVER (ORDER BY seq ROWS UNBOUNDED "
            "PRECEDING) AS acc FROM (SELECT seq, length(data) + ?5 * n AS size FROM messages "
            "WHERE stream_id = ?1 AND channel = ?2 AND seq >= ?3 AND seq <= ?4 ORDER BY seq "
            "LIMIT ?6)) WHERE acc >= ?7 ORDER BY seq LIMIT 1"
        )
        params = (self.stream_id, self.channel, first, until, _MESSAGE_OVERHEAD, limit, max_bytes)
        rows = await self._rows(sql, *params)
        return int(rows[0][0]) if rows else until

    async def id_before(self, first: int) -> str | None:
        run = await self.last_before(first)
        if run is None:
            return None
        message_id, seq, n = run[0], run[4], run[6]
        return id_at(message_id, min(n, first - seq) - 1)
