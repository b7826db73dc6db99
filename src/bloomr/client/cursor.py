"""Where a subscription stands in its channel, and what to ask on the next connection.

Pure bookkeeping, no I/O: the subscription feeds it the events of each connection in
the order the server sent them."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

MAX_REPLAY = 10_000  # the server's cap on one replay
RECENT_IDS = 4096  # ids remembered to drop a message seen twice
# Warnings about the replay a live-only subscription asks for to learn where the
# channel ends: not the user's business.
QUIET_WARNINGS = frozenset({"replay_truncated", "history_disabled", "replay_limit_capped"})


@dataclass
class Cursor:
    """The resume point (`last_id`) and the replay arguments of the next connection.

    A subscription without `replay`/`replay_limit` still replays the newest message of
    the channel on its first connection, without delivering it: its id is where a
    reconnection resumes, even if nothing is published before the connection drops.
    A subscription that has joined (seen a `replay_end`) but received nothing asks
    again with what it asked the first time (an empty window then holds exactly what
    came since), or, when it asked only for a count, the whole history (the channel
    was empty)."""

    replay: str | None = None
    replay_limit: int | None = None
    last_id: str | None = None  # the newest message accepted (or skipped as old)
    joined: bool = False  # a replay_end came: the channel's end at joining time is known
    quiet: bool = field(default=False, init=False)  # this connection's replay is not shown
    _recent: deque[str] = field(default_factory=lambda: deque(maxlen=RECENT_IDS), init=False)
    _recent_set: set[str] = field(default_factory=set, init=False)

    def handshake(self) -> dict[str, str]:
        """The replay arguments of the next connection (and where it stands: quiet)."""
        asked = self.replay is not None or self.replay_limit is not None
        self.quiet = not self.joined and not asked and self.last_id is None
        if self.last_id is not None:
            return {"replay": self.last_id}  # strictly after it
        if self.quiet:
            return {"replayLimit": "1"}
        if not self.joined or self.replay is not None:
            return replay_args(self.replay, self.replay_limit)
        return {"replayLimit": str(MAX_REPLAY)}

    def accept(self, message_id: str, replayed: bool) -> bool:
        """Whether to deliver a message. The server never repeats one across a resume;
        the last ids are kept anyway, so a straggler cannot be delivered twice."""
        if not self.remember(message_id):
            return False
        self.last_id = message_id
        return not (replayed and self.quiet)

    def remember(self, message_id: str) -> bool:
        """Note an id; False if it was seen already."""
        if message_id in self._recent_set:
            return False
        if len(self._recent) == self._recent.maxlen:
            self._recent_set.discard(self._recent[0])
        self._recent.append(message_id)
        self._recent_set.add(message_id)
        return True

    def replay_ended(self) -> bool:
        """A `replay_end` came; True the first time (the subscription is live)."""
        first = not self.joined
        self.joined = True
        self.quiet = False
        return first

    def mutes(self, code: str) -> bool:
        """Whether a warning is about the quiet replay of a live-only subscription."""
        return self.quiet and code in QUIET_WARNINGS


def replay_args(replay: str | None, limit: int | None) -> dict[str, str]:
    """The handshake keys for `replay` and `replay_limit`, leaving out what is None."""
    args = {"replay": replay, "replayLimit": None if limit is None else str(limit)}
    return {k: v for k, v in args.items() if v is not None}
