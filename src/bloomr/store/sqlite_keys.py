"""Idempotency keys in the embedded SQLite database (table `idempotency`, migration 5),
written inside the append's own transaction (`sqlite_history._in_transaction`): looked up
before their batch is ordered and recorded with it, so a repeat is never stored."""

from __future__ import annotations

import sqlite3
from collections import Counter

import aiosqlite

from ..errors import BloomrError
from ..idempotency import KeyPolicy, Repeat, answer_for, split_ids
from ..model import Message, now_ms
from .base import AppendBatch
from .sqlite_db import Row


class KeyBook:
    """The idempotency keys of one group commit, inside its transaction: looked up
    before their batch is ordered, recorded with it. A key seen earlier in the same
    group counts as recorded."""

    def __init__(self, conn: sqlite3.Connection, policy: KeyPolicy) -> None:
        self.conn, self.policy = conn, policy
        self.now = now_ms()
        self.seen: dict[tuple[str, str], tuple[str, list[str]]] = {}
        self.rows: list[Row] = []

    def lookup(self, batch: AppendBatch) -> Repeat | BloomrError | None:
        assert batch.key is not None
        found = self.seen.get((batch.stream_id, batch.key))
        if found is None:
            row = self.conn.execute(
                "SELECT fingerprint, ids FROM idempotency "
                "WHERE stream_id = ? AND key = ? AND at_ms >= ?",
                (batch.stream_id, batch.key, self.now - self.policy.ttl_ms),
            ).fetchone()
            if row is None:
                return None
            found = (str(row[0]), split_ids(bytes(row[1])))
        return answer_for(batch.fingerprint, *found)

    def record(self, batch: AppendBatch, messages: list[Message]) -> None:
        assert batch.key is not None
        ids = [m.id for m in messages]
        self.seen[(batch.stream_id, batch.key)] = (batch.fingerprint, ids)
        blob = "".join(ids).encode()
        self.rows.append((batch.stream_id, batch.key, batch.fingerprint, blob, messages[0].ts_ms))

    def write(self) -> None:
        """Forget each stream's keys past their time, record the new ones, then drop
        the oldest beyond its newest `per_stream`. `heads.keys` counts a stream's keys:
        finding the cap's boundary costs a scan of the keys (a quarter of a millisecond
        at 10,000), so it is looked for only once the count passes the cap."""
        if not self.rows:
            return
        added = Counter(row[0] for row in self.rows)
        since = self.now - self.policy.ttl_ms
        for stream_id, count in added.items():
            gone = self.conn.execute(
                "DELETE FROM idempotency WHERE stream_id = ? AND at_ms < ?", (stream_id, since)
            ).rowcount
            self.conn.execute(
                "UPDATE heads SET keys = keys + ? WHERE stream_id = ?", (count - gone, stream_id)
            )
        self.conn.executemany(
            "INSERT OR REPLACE INTO idempotency VALUES (?, ?, ?, ?, ?)", self.rows
        )
        for stream_id in added:
            _keep_newest_keys(self.conn, stream_id, self.policy.per_stream)


def _keep_newest_keys(conn: sqlite3.Connection, stream_id: str, most: int) -> None:
    found = conn.execute("SELECT keys FROM heads WHERE stream_id = ?", (stream_id,)).fetchone()
    over = int(found[0]) - most if found else 0
    if over <= 0:
        return
    conn.execute(
        "DELETE FROM idempotency WHERE stream_id = ?1 AND key IN (SELECT key FROM idempotency "
        "WHERE stream_id = ?1 ORDER BY at_ms, key LIMIT ?2)",
        (stream_id, over),
    )
    conn.execute("UPDATE heads SET keys = ? WHERE stream_id = ?", (most, stream_id))


async def forget_old_keys(conn: aiosqlite.Connection, stream_id: str, before_ms: int) -> None:
    """Idempotency keys past their time (of a stream that went quiet: appends under a
    key forget them too), with the stream's count of keys."""
    cursor = await conn.execute(
        "DELETE FROM idempotency WHERE stream_id = ? AND at_ms < ?", (stream_id, before_ms)
    )
    if cursor.rowcount > 0:
        await conn.execute(
            "UPDATE heads SET keys = keys - ? WHERE stream_id = ?", (cursor.rowcount, stream_id)
        )
