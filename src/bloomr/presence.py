"""Occupancy across nodes: how many live subscribers each channel of a stream has on
every node (SPEC §7, `GET /api/streams/{id}/occupancy`).

A node always knows its own subscribers exactly (`Subscribers.occupancy`). What the
other nodes have is what they last announced: `Presence.elsewhere`.

Embedded, there is no elsewhere (`LocalPresence`). In a cluster (`RedisPresence`) each
node writes its counts into one Redis hash per stream, a field per node
(`<prefix>:occupancy:{<stream>}` → `<node id>` → `{"channel": n}`), and keeps a
liveness key (`<prefix>:node:<node id>`, expiring after `ttl` seconds: the lease ttl)
alive. Why this
shape: a read is two round trips whatever the number of streams (HGETALL, then the
liveness of the nodes it names), a node that dies stops counting once its liveness key
expires (readers skip its field, and remove it), and no clock but Redis's is trusted.

Freshness: a change is written within `_SETTLE` seconds (changes in that time are
written together); every ttl/4 seconds the node writes all its counts again, so a
Redis that lost its data (a restart without persistence) is whole again within one
heartbeat. A write that fails is tried again at the next change or heartbeat."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

import orjson

from .faults import guarded
from .tasks import cancel

if TYPE_CHECKING:
    import redis.asyncio as aioredis

log = logging.getLogger("bloomr.presence")

Counts = dict[str, int]  # channel -> live subscribers
LocalCounts = Callable[[], dict[str, Counts]]  # this node's, by stream (non-empty only)

_SETTLE = 0.05  # seconds: changes closer than this are written together


class Presence(Protocol):
    async def start(self, local: LocalCounts) -> None:
        """Begin announcing this node's counts, read from `local`."""
        ...

    async def stop(self) -> None:
        """Stop announcing, and withdraw this node's counts."""
        ...

    def changed(self, stream_id: str) -> None:
        """This node's subscribers of `stream_id` changed (must not block)."""
        ...

    async def elsewhere(self, stream_id: str) -> list[Counts]:
        """The counts the other live nodes announced for `stream_id`."""
        ...


class LocalPresence:
    """One node: nobody else to count."""

    async def start(self, local: LocalCounts) -> None:
        pass

    async def stop(self) -> None:
        pass

    def changed(self, stream_id: str) -> None:
        pass

    async def elsewhere(self, stream_id: str) -> list[Counts]:
        return []


def total(mine: Counts, theirs: list[Counts]) -> Counts:
    """Counts summed channel by channel."""
    summed = dict(mine)
    for counts in theirs:
        for channel, n in counts.items():
            summed[channel] = summed.get(channel, 0) + n
    return summed


@guarded
class RedisPresence:
    """Implements Presence in Redis (see the module's docstring)."""

    def __init__(
        self,
        client: Callable[[], aioredis.Redis],
        prefix: str,
        node_id: str,
        ttl: float = 10.0,
    ) -> None:
        self._client = client  # the history's, opened before this starts
        self._prefix = prefix
        self.node_id = node_id
        self._heartbeat = ttl / 4  # three may fail before the node counts as gone
        self._ttl_ms = int(ttl * 1000)
        self._local: LocalCounts = dict
        self._dirty: set[str] = set()
        self._written: set[str] = set()  # streams this node has a field for
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def _hash(self, stream_id: str) -> str:
        return f"{self._prefix}:occupancy:{{{stream_id}}}"

    def _alive(self, node_id: str) -> str:
        return f"{self._prefix}:node:{node_id}"

    async def start(self, local: LocalCounts) -> None:
        self._local = local
        self._task = asyncio.create_task(self._announce(), name="bloomr-presence")

    async def stop(self) -> None:
        await cancel(self._task)
        self._task = None
        with contextlib.suppress(Exception):  # gone by itself after the ttl anyway
            async with self._client().pipeline(transaction=False) as pipe:
                for stream_id in self._written:
                    pipe.hdel(self._hash(stream_id), self.node_id)
                pipe.delete(self._alive(self.node_id))
                await pipe.execute()
        self._written.clear()

    def changed(self, stream_id: str) -> None:
        self._dirty.add(stream_id)
        self._wake.set()

    async def elsewhere(self, stream_id: str) -> list[Counts]:
        client = self._client()
        fields = await client.hgetall(self._hash(stream_id))
        announced = {_text(node): counts for node, counts in fields.items()}
        announced.pop(self.node_id, None)
        if not announced:
            return []
        if await client.exists(*map(self._alive, announced)) < len(announced):
            # some died: which ones (a round trip per node only then)
            for node in list(announced):
                if not await client.exists(self._alive(node)):
                    del announced[node]
                    await client.hdel(self._hash(stream_id), node)
        return [orjson.loads(counts) for counts in announced.values()]

    # -- announcing -----------------------------------------------------------------------

    async def _announce(self) -> None:
        everything = True
        while True:
            try:
                await self._write(everything)
                everything = False
            except Exception as exc:  # Redis down: written again at the next try
                log.warning("presence: could not announce this node's counts (%s)", exc)
                everything = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._heartbeat)
                await asyncio.sleep(_SETTLE)
                continue
            everything = True  # a heartbeat: all of them again

    async def _write(self, everything: bool) -> None:
        self._wake.clear()
        counts = self._local()
        streams = set(counts) | self._written if everything else self._dirty
        self._dirty = set()
        try:
            async with self._client().pipeline(transaction=False) as pipe:
                pipe.set(self._alive(self.node_id), b"1", px=self._ttl_ms)
                for stream_id in streams:
                    mine = counts.get(stream_id)
                    if mine:
                        pipe.hset(self._hash(stream_id), self.node_id, orjson.dumps(mine))
                    else:
                        pipe.hdel(self._hash(stream_id), self.node_id)
                await pipe.execute()
        except BaseException:
            self._dirty |= streams
            raise
        self._written = {s for s in self._written | streams if counts.get(s)}


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
