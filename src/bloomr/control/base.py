"""The control contract and this node's end of it."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol, get_args

import orjson

log = logging.getLogger("bloomr.control")

ControlKind = Literal[
    "token_revoked",  # target: a token id
    "jwt_revoked",  # target: a JWT revocation's JSON (jwt_tokens/revocations.py)
    "stream_deleted",  # target: a stream id (also all the others below)
    "stream_updated",  # its fields changed (`enabled` included): caches reload it
    "script_start",  # start its script on the node holding its lease
    "script_restart",  # restart its script on the node holding its lease
    "script_reported",  # the node running its script stored a new report
    "webhooks_changed",  # its webhooks were created or deleted
    "webhooks_pending",  # its webhooks' outboxes got messages
]
CONTROL_KINDS: frozenset[str] = frozenset(get_args(ControlKind))


@dataclass(frozen=True, slots=True)
class ControlEvent:
    kind: ControlKind
    target: str  # a token id, a stream id or a JWT revocation

    def encode(self) -> bytes:
        return orjson.dumps({"kind": self.kind, "target": self.target})

    @staticmethod
    def decode(payload: bytes) -> ControlEvent | None:
        """None for anything that is not a control event this version knows."""
        try:
            doc = orjson.loads(payload)
            kind, target = doc["kind"], doc["target"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return None
        if kind not in CONTROL_KINDS or not isinstance(target, str):
            return None
        return ControlEvent(kind, target)


class ControlHandler(Protocol):
    def on_control(self, event: ControlEvent) -> None:
        """Called on the channel's task for every event; must not block."""
        ...


class ControlChannel(Protocol):
    """Carries control events to every node, the sending one included.

    Guarantees: events one node sends reach each node in the order sent, at most once.
    An event can be lost (a node's connection to the channel broke): the state it
    announces is always in the stores before it is sent, and whoever relies on an event
    also looks at the stores now and then, so a lost event only delays. A channel that
    cannot send raises; one that cannot receive reconnects by itself."""

    async def start(self, handler: ControlHandler) -> None:
        """Returns once listening: every event sent from then on reaches the handler."""
        ...

    async def stop(self) -> None: ...

    async def send(self, event: ControlEvent) -> None: ...


Watcher = Callable[[ControlEvent], None]


class Control:
    """This node's end of the control channel: `send` to every node, `watch` for what
    any node (this one included) sends. Watchers run in the order they were added, so
    a part that must act first (the hub, which ends sessions) watches first."""

    def __init__(self, channel: ControlChannel) -> None:
        self.channel = channel
        self._watchers: list[Watcher] = []

    def watch(self, watcher: Watcher) -> None:
        """`watcher` must not block (queue the work)."""
        self._watchers.append(watcher)

    async def start(self) -> None:
        await self.channel.start(self)

    async def stop(self) -> None:
        await self.channel.stop()

    async def send(self, event: ControlEvent) -> None:
        await self.channel.send(event)

    def on_control(self, event: ControlEvent) -> None:
        for watcher in self._watchers:
            try:
                watcher(event)
            except Exception:  # one part's bug must not keep the event from the others
                log.exception("control watcher %r failed on %r", watcher, event)
