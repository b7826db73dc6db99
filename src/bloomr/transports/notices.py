"""Replay notices as `warning` payloads, the same on every transport: this is where
their wire names (camelCase, as the original's events) are written."""

from __future__ import annotations

from typing import Any

from ..errors import warning
from ..replay_plan import (
    HistoryDisabled,
    LimitCapped,
    Notice,
    RecoveryFailed,
    Truncated,
    UnknownId,
)


def notice_payload(notice: Notice) -> dict[str, Any]:
    match notice:
        case LimitCapped(limit, requested):
            return warning(
                "replay_limit_capped",
                f"replayLimit is capped at {limit}",
                limit=limit,
                requested=requested,
            )
        case Truncated(limit, matched, first_id, backfill_id):
            return warning(
                "replay_truncated",
                f"{matched} messages match, only the newest {limit} are replayed",
                limit=limit,
                matched=matched,
                omitted=matched - limit,
                firstReplayedId=first_id,
                backfillAfterId=backfill_id,
            )
        case UnknownId(message_id):
            return warning(
                "unknown_message_id",
                "that message id is not in this stream's history: replaying the newest "
                "messages instead",
                id=message_id,
            )
        case RecoveryFailed(reason):
            return warning(
                "recovery_failed",
                "this connection could not resume where the last one stopped: it starts "
                "anew with its handshake arguments",
                reason=reason,
            )
        case HistoryDisabled():
            return warning(
                "history_disabled", "this stream does not store history: nothing to replay"
            )
