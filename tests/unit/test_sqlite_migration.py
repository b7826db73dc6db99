"""A data directory written by an earlier bloomr (schema 1: a time index on messages)
opens with its history intact and findable by id and by time."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from bloomr.idempotency import Repeat
from bloomr.model import Draft
from bloomr.replay import AfterId
from bloomr.store.base import AppendBatch
from bloomr.store.sqlite import SQLiteStore
from queries import paging, replaying

_SCHEMA_1 = """
CREATE TABLE heads (stream_id TEXT PRIMARY KEY, last_seq INTEGER NOT NULL);
CREATE TABLE messages (
    stream_id TEXT NOT NULL, seq INTEGER NOT NULL, id TEXT NOT NULL, channel TEXT NOT NULL,
    ts_ms INTEGER NOT NULL, data BLOB NOT NULL, PRIMARY KEY (stream_id, seq)) WITHOUT ROWID;
CREATE INDEX messages_by_channel ON messages (stream_id, channel, seq);
CREATE INDEX messages_by_ts ON messages (stream_id, ts_ms);
"""


def _id(ms: int, n: int) -> str:
    return f"{ms >> 16:08x}-{ms & 0xFFFF:04x}-7000-8000-{n:012x}"


# three messages over two milliseconds
_ROWS = [
    ("streamAAAA", 1, _id(1720000000001, 1), "", 1720000000001, b'"a"'),
    ("streamAAAA", 2, _id(1720000000001, 2), "", 1720000000001, b'"b"'),
    ("streamAAAA", 3, _id(1720000000002, 3), "", 1720000000002, b'"c"'),
]


def _old_database(path: Path) -> None:
    path.parent.mkdir(parents=True)
    conn = sqlite3.connect(path)
    conn.executescript(_SCHEMA_1)
    conn.executemany("INSERT INTO messages VALUES (?, ?, ?, ?, ?, ?)", _ROWS)
    conn.execute("INSERT INTO heads VALUES ('streamAAAA', 3)")
    conn.commit()
    conn.close()


async def test_schema_1_history_is_found_by_id_and_time(tmp_path: Path) -> None:
    path = tmp_path / "data" / "bloomr.db"
    _old_database(path)
    store = SQLiteStore(path)
    await store.open()
    try:
        after_first = await store.replay(
            replaying("streamAAAA", "", AfterId(_ROWS[0][2]), 10, None)
        )
        assert [m.data for m in after_first.messages] == ["b", "c"]
        assert not after_first.unknown_id
        since = await store.page(paging("streamAAAA", "", None, 1720000000002, 10))
        assert [m.data for m in since] == ["c"]
        [added] = await store.append([AppendBatch("streamAAAA", [Draft("", b'"d"')], True)])
        assert isinstance(added, list) and [m.seq for m in added] == [4]
        after_last_old = await store.page(paging("streamAAAA", "", _ROWS[2][2], None, 10))
        assert [m.data for m in after_last_old] == ["d"]
        keyed = AppendBatch("streamAAAA", [Draft("", b'"e"')], True, "key", "f" * 32)
        [first] = await store.append([keyed])
        assert isinstance(first, list) and [m.seq for m in first] == [5]
        assert await store.append([keyed]) == [Repeat([first[0].id])]  # keys, migrated in
    finally:
        await store.close()
    conn = sqlite3.connect(path)
    indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    conn.close()
    assert "messages_by_ts" not in indexes
