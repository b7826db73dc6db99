"""Webhook outboxes written inside the embedded history's append transaction.

The webhooks live in the same SQLite file as the history, so a publish and the outbox
items it makes for the stream's webhooks commit together: a message acknowledged by a
publish is in every outbox it belongs to, whatever happens to the process after the
commit. The webhook store keeps the routes of every stream that has webhooks, exactly
(one process owns the file), and hands the history that mapping: the append looks a
stream up in it once per batch, so a stream without webhooks pays one dict lookup."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping

from ..model import Message
from .base import Routes

# an epoch gets the next era the first time an outbox sees it (AUTOINCREMENT never
# hands out a number twice, so eras only grow)
INSERT_ERA = "INSERT OR IGNORE INTO outbox_eras (epoch) VALUES (?)"
SELECT_ERA = "SELECT era FROM outbox_eras WHERE epoch = ?"
INSERT_ITEM = (
    "INSERT OR IGNORE INTO webhook_outbox (webhook_id, era, seq, envelope) VALUES (?, ?, ?, ?)"
)

RoutesByStream = Mapping[str, Routes]  # only the streams that have webhooks


def items(routes: Routes, messages: list[Message], era: int) -> list[tuple[str, int, int, bytes]]:
    """The outbox rows of `messages` for webhooks with `routes`."""
    return [
        (webhook_id, era, m.seq, m.envelope_json(None))
        for webhook_id, channel in routes
        for m in messages
        if m.channel == channel
    ]


def write(
    conn: sqlite3.Connection, stream_id: str, routes: Routes, messages: list[Message]
) -> None:
    """Add `messages` (just appended, after the stream's head was written) to the outboxes
    of `routes`, in the era of the stream's history epoch, inside the caller's
    transaction."""
    found = conn.execute("SELECT epoch FROM heads WHERE stream_id = ?", (stream_id,)).fetchone()
    epoch = str(found[0]) if found else ""
    conn.execute(INSERT_ERA, (epoch,))
    era = int(conn.execute(SELECT_ERA, (epoch,)).fetchone()[0])
    conn.executemany(INSERT_ITEM, items(routes, messages, era))
