"""The streams service: the one place that creates, changes, deletes and enables
streams and revokes tokens, keeps this node's caches of them, and tells every node.

Routes, CLI-facing endpoints and the scripts call it; nothing else writes a stream or
sends `stream_updated`, `stream_deleted` or `token_revoked`. Each change is stored
first, then announced: another node that hears of it reads the store again, so an
announcement lost in transit only delays (caches expire by `stream_updated`)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from .control import Control, ControlEvent
from .errors import BloomrError
from .hub import Hub
from .jwt_tokens.revocations import JwtRevocation, RevokedTokens
from .model import Retention, Stream, Token, iso_now, new_stream_id
from .store.base import MetadataStore

log = logging.getLogger("bloomr.streams")
JWT_REVOCATIONS_EVERY = 30.0  # seconds between reads of the stored JWT revocations

# the fields a create or an update may set, as the API validated them
_PLAIN_FIELDS = ("name", "store_history", "command", "cwd", "env", "restart")
_NULLABLE = frozenset({"command", "cwd", "env"})  # may be set to None


class StreamHooks(Protocol):
    """What must happen elsewhere when a stream changes (the scripts implement it)."""

    def check(self, stream: Stream) -> None:
        """Raise BloomrError for a stream that cannot be stored as it is."""
        ...

    async def stream_updated(self, stream: Stream) -> None:
        """Before an update is stored (it may still change `stream`, say `enabled`)."""
        ...

    async def stream_deleted(self, stream_id: str) -> None:
        """Before the stream is deleted."""
        ...


class Streams:
    def __init__(
        self, meta: MetadataStore, hub: Hub, control: Control, revoked_tokens: RevokedTokens
    ) -> None:
        self.meta = meta
        self._hub = hub
        self._control = control
        self._hooks: StreamHooks | None = None
        self._cache: dict[str, Stream] = {}
        self._deleted: set[str] = set()
        self._generation = 0  # counts stream_updated events: a read that raced one is not cached
        # Tokens revoked while this node runs (from any node): a token read from a cache
        # or by a read that raced the delete must not outlive its revocation. Shared
        # with the Authenticator and the hub, which read it. It also holds the JWT
        # revocations in force (stored, loaded at start by `load_jwt_revocations`).
        self.revoked_tokens = revoked_tokens
        control.watch(self._on_control)

    def hook(self, hooks: StreamHooks) -> None:
        self._hooks = hooks

    # -- reading ----------------------------------------------------------------------

    def cached(self, stream_id: str) -> Stream | None:
        """A stream by id if this node has it cached (None: ask `get`)."""
        return None if stream_id in self._deleted else self._cache.get(stream_id)

    async def get(self, stream_id: str) -> Stream | None:
        """A stream by id, from the cache (the metadata store on a miss)."""
        if stream_id in self._deleted:
            return None
        stream = self._cache.get(stream_id)
        if stream is None:
            generation = self._generation
            stream = await self.meta.get_stream(stream_id)
            fresh = generation == self._generation  # no update announced meanwhile
            if stream is not None and fresh and stream_id not in self._deleted:
                self._cache[stream_id] = stream
        return stream

    async def require(self, stream_id: str) -> Stream:
        """The stream as stored now (not cached), or `not_found`."""
        stream = await self.meta.get_stream(stream_id)
        if stream is None:
            raise BloomrError("not_found", f"stream {stream_id} not found")
        return stream

    async def list(self) -> list[Stream]:
        return await self.meta.list_streams()

    # -- changing ---------------------------------------------------------------------

    async def create(self, fields: Mapping[str, Any]) -> Stream:
        stream = Stream(id=new_stream_id(), name="", retention=Retention())
        _apply(stream, fields)
        self._check(stream)
        await self.meta.create_stream(stream)
        self._deleted.discard(stream.id)
        self._cache[stream.id] = stream
        return stream

    async def update(self, stream_id: str, fields: Mapping[str, Any]) -> Stream:
        stream = await self.require(stream_id)
        _apply(stream, fields)
        self._check(stream)
        stream.updated_at = iso_now()
        if self._hooks is not None:
            await self._hooks.stream_updated(stream)
        await self._store(stream)
        return stream

    async def set_enabled(self, stream: Stream, enabled: bool) -> None:
        """Record whether the stream's script should run (and every node's scripts look)."""
        if stream.enabled != enabled:
            stream.enabled = enabled
            await self._store(stream)

    async def delete(self, stream_id: str) -> None:
        """Delete the stream, its script, its history and its live sessions."""
        await self.require(stream_id)
        if self._hooks is not None:
            await self._hooks.stream_deleted(stream_id)
        await self.meta.delete_stream(stream_id)
        self._forget(stream_id)
        await self._control.send(ControlEvent("stream_deleted", stream_id))
        await self._hub.drop_stream(stream_id)

    async def revoke_token(self, token_id: str) -> Token:
        """Delete a token; its live sessions end on every node within a second."""
        token = await self.meta.delete_token(token_id)
        if token is None:
            raise BloomrError("not_found", f"token {token_id} not found")
        self.revoked_tokens.add(token_id)
        await self._control.send(ControlEvent("token_revoked", token_id))
        return token

    async def revoke_jwt(self, rule: JwtRevocation) -> None:
        """Refuse the JWTs `rule` names until it expires; their live sessions end on
        every node within a second."""
        await self.meta.save_jwt_revocation(rule)
        self._add_jwt_revocation(rule)
        await self._control.send(ControlEvent("jwt_revoked", rule.encode()))

    async def load_jwt_revocations(self) -> None:
        """The revocations stored by any node, before this one or while it was away (or
        whose event it missed): the new ones end their sessions here too."""
        stored = await self.meta.jwt_revocations()
        new = [rule for rule in stored if self.revoked_tokens.add_revocation(rule)]
        if new:
            self._hub.subscribers.end_revoked()

    async def watch_jwt_revocations(self, interval: float) -> None:
        """`load_jwt_revocations` every `interval` seconds, for as long as it runs: a
        revocation whose event this node missed is heard of all the same."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.load_jwt_revocations()
            except Exception:  # the store is down: next time
                log.warning("reading the JWT revocations failed", exc_info=True)

    def _add_jwt_revocation(self, rule: JwtRevocation) -> None:
        self.revoked_tokens.add_revocation(rule)
        self._hub.subscribers.end_revoked()  # the revoked set says which tokens it names

    async def _store(self, stream: Stream) -> None:
        await self.meta.update_stream(stream)
        self._cache[stream.id] = stream
        await self._control.send(ControlEvent("stream_updated", stream.id))

    def _check(self, stream: Stream) -> None:
        if self._hooks is not None:
            self._hooks.check(stream)

    def _forget(self, stream_id: str) -> None:
        self._deleted.add(stream_id)
        self._cache.pop(stream_id, None)

    def _on_control(self, event: ControlEvent) -> None:
        if event.kind == "token_revoked":
            self.revoked_tokens.add(event.target)
        elif event.kind == "jwt_revoked":
            rule = JwtRevocation.decode(event.target)
            if rule is not None:
                self._add_jwt_revocation(rule)
        elif event.kind == "stream_deleted":
            self._forget(event.target)
        elif event.kind == "stream_updated":
            self._generation += 1
            self._cache.pop(event.target, None)


def _apply(stream: Stream, fields: Mapping[str, Any]) -> None:
    """Set what a create or an update gives (absent or None: unchanged, but for the
    fields that may be cleared)."""
    for name in _PLAIN_FIELDS:
        if name in fields and (fields[name] is not None or name in _NULLABLE):
            setattr(stream, name, fields[name])
    retention = fields.get("retention") or {}
    if retention.get("max_age") is not None:
        stream.retention.max_age = retention["max_age"]
    if retention.get("max_messages") is not None:
        stream.retention.max_messages = retention["max_messages"]


SetEnabled = Callable[[Stream, bool], Awaitable[None]]
