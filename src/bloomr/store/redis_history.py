"""Cluster history in Redis: every node appends to and reads from the same keys.

As in Centrifugo's Redis engine, one Lua script per group commit does, per batch and
atomically: take the stream's next seqs, stamp the batch with Redis's clock, store the
messages and PUBLISH them on the stream's bus channel. Scripts run one at a time, so
the order messages are published in is their seq order, whichever node appended them.

Layout, for a stream S under prefix P (`{S}` is a hash tag: one stream, one slot):

    P:{S}:head      hash   seq (last seq given), ts (last timestamp given),
                           its (last timestamp in P:{S}:ts), epoch (made with the head:
                           a history lost with its head gets a new one), base (the
                           last seq before the epoch, when a history that went back
                           got a new one: see `redis_reads.SINCE_SEQ`); only `drop`
                           deletes it
    P:{S}:c:<ch>    zset   score seq, member a row: a 20-byte header (data length, seq,
                           ts_ms), the id, the data JSON: the messages of channel ch
    P:{S}:all       zset   score seq, member id + channel name: every stored message
    P:{S}:ts        zset   score ts_ms, member the first stored seq with that ts_ms
    P:{S}:chans     set    the channel names that have a P:{S}:c:<ch>
    P:{S}:keys      hash   idempotency key -> its fingerprint then the ids it got
    P:{S}:keyt      zset   score ts_ms, member an idempotency key: when it was recorded
                           (keys older than the ttl, and beyond the newest
                           `KeyPolicy.per_stream`, are removed by the append and trim)
    P:{S}:bus       the pub/sub channel of S (not a key)

Message ids are UUIDv7 made in Lua from the batch's timestamp and each message's seq
(42 bits of counter, as `model._UUIDv7` lays them out, then 32 random bits): with
timestamps never decreasing along seq, ids sort in seq order, and an id tells its own
seq and timestamp, so no id index is needed. (Past 2**42 messages in one stream the
ids would stop sorting: 4.4e12, a century at a thousand a second.)

Durability is Redis's: "stored before returning" holds across a node's crash, and
across Redis's own only as far as its persistence is set up (AOF, replicas).

Redis Cluster: a stream's keys share a slot, and the scripts reach channel keys they
build from the stream's key base (the same slot). One append call spans every stream
of a group commit, which a single Redis or a cluster proxy accepts; a client talking
to cluster nodes directly would make one call per slot."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError

from ..errors import BloomrError
from ..faults import BACKEND_TIMEOUT, as_error, guarded
from ..idempotency import KeyPolicy, Repeat, answer_for, split_ids
from ..model import Draft, Message, uuid7_ms
from .base import AppendBatch, Appended, HistoryGap, HistoryQuery, ReplaySlice
from .redis_layout import ID_LEN, key_base, new_epoch, read_rows, seq_of_id
from .redis_reads import PAGE, REPLAY, SINCE_SEQ, page_args, start_args

Seen = tuple[str, int, int]  # a reader's last delivered message: epoch, seq, ts_ms
SeenOf = Callable[[str], Seen | None]
NOTHING_SEEN: Seen = ("", 0, 0)

# Shared by the scripts below and those of `redis_reads.py`. `held`, `first_since` and
# `holds_after` mirror SQLite's seq_of, first_seq_since and holds_after.
_LUA_COMMON = """
local function held(all, seq, id)
  if seq < 1 then return nil end
  local m = redis.call('ZRANGEBYSCORE', all, seq, seq)[1]
  if m and string.sub(m, 1, 36) == id then return seq end
  return nil
end
local function head_seq(head)
  return tonumber(redis.call('HGET', head, 'seq')) or 0
end
local function epoch_of(head)
  return redis.call('HGET', head, 'epoch') or ''
end
-- whether every stored message after seq `after` is still here (none trimmed since)
local function holds_after(head, all, after)
  if after >= head_seq(head) then return true end
  local oldest = redis.call('ZRANGE', all, 0, 0, 'WITHSCORES')[2]
  return oldest ~= nil and tonumber(oldest) <= after + 1
end
-- timestamps never decrease along seq, so the first stored seq at or after ts starts
-- the matching range (any channel)
local function first_since(tsidx, head, ts)
  local m = redis.call('ZRANGEBYSCORE', tsidx, ts, '+inf', 'LIMIT', 0, 1)[1]
  if m then return tonumber(m) end
  return head_seq(head) + 1
end
-- Whether a history went back under the same epoch (a Redis restored from an older
-- snapshot): its head (`epoch`, and `last` seq and `last_ts` as the caller read them)
-- judged against the last message a reader delivered (seq, ts): timestamps
-- never decrease along seq within an epoch, so a head behind that seq, or a stored seq
-- at or below it stamped after it, cannot be the same history. If so, the stream gets
-- `fresh` as its epoch, whose `base` is the old history's last seq (reads of the new
-- epoch start after it), and the new epoch is returned; else nil.
local function went_back(head, tsidx, epoch, last, last_ts, seen_epoch, seen, seen_ts, fresh)
  if seen_epoch == '' or epoch ~= seen_epoch then return nil end
  if last >= seen and last_ts <= seen_ts then return nil end  -- nothing stamped later
  local first_new = first_since(tsidx, head, seen_ts + 1)
  if last >= seen and first_new > seen then return nil end
  redis.call('HSET', head, 'epoch', fresh, 'base', first_new - 1)
  return fresh
end
local function id_ms(id)
  return tonumber(string.sub(id, 1, 8) .. string.sub(id, 10, 13), 16)
end
-- the id in a channel-set member (after its 20-byte header)
local function row_id(row)
  return string.sub(row, 21, 56)
end
"""

# KEYS, per batch: head, all, ts, chans, [keys, keyt: when it has an idempotency key],
# then one channel key per distinct channel.
# ARGV: the epoch of a head made now (16 characters), how long keys are kept (ms), how
# many keys a stream keeps, then per batch: bus channel, keep (1/0), idempotency key
# ('' for none), the epoch, seq and ts_ms of the last message of the stream this node
# delivered ('', 0, 0 for none: see `went_back`), [the key's fingerprint], k, the k
# channel names, n, then n message arguments: [4-byte channel index when k > 1]
# 4 random bytes, data JSON.
# Reply, per batch: {first seq, ts_ms, the n ids concatenated, epoch}, or for a key recorded
# already {0, its fingerprint, its ids concatenated, epoch} (nothing stored or published).
# What each stored batch PUBLISHes: its head's epoch, then per message a length byte,
# the channel, its row.
_APPEND = """
local function zadd(key, flat)
  for i = 1, #flat, 2000 do
    redis.call('ZADD', key, unpack(flat, i, math.min(i + 1999, #flat)))
  end
end
local function sadd(key, names)
  for i = 1, #names, 2000 do
    redis.call('SADD', key, unpack(names, i, math.min(i + 1999, #names)))
  end
end
local function make_id(stamp, seq, arg, off)
  return stamp .. string.format('%03x-%04x-%04x%02x%02x%02x%02x',
    math.floor(seq / 1073741824) % 4096, 32768 + math.floor(seq / 65536) % 16384,
    seq % 65536, string.byte(arg, off, off + 3))
end
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local since, cap = now - tonumber(ARGV[2]), tonumber(ARGV[3])
-- a key's record (hash keys: fingerprint .. ids), unless it is older than `since`
local function recorded(book, booked, key, fp, head)
  local rec = redis.call('HGET', book, key)
  local at = rec and tonumber(redis.call('ZSCORE', booked, key))
  if not at or at < since then return false end
  local epoch = redis.call('HGET', head, 'epoch') or ''
  return {0, string.sub(rec, 1, #fp), string.sub(rec, #fp + 1), epoch}
end
-- record a key, then forget those past their time and the oldest beyond `cap`
local function record(book, booked, key, fp, ts, ids)
  redis.call('HSET', book, key, fp .. ids)
  redis.call('ZADD', booked, ts, key)
  local gone = redis.call('ZRANGEBYSCORE', booked, '-inf', '(' .. since, 'LIMIT', 0, 1000)
  local over = math.min(redis.call('ZCARD', booked) - #gone - cap, 1000)
  if over > 0 then
    for _, m in ipairs(redis.call('ZRANGE', booked, #gone, #gone + over - 1)) do
      gone[#gone + 1] = m
    end
  end
  if #gone > 0 then
    redis.call('ZREM', booked, unpack(gone))
    redis.call('HDEL', book, unpack(gone))
  end
end
-- order, store and publish one batch: KEYS[k..k+3] its stream's keys, KEYS[c + i] its
-- channel i's, ARGV[a..a+n-1] its messages
local function append(k, c, a, bus, keep, names, n, seen)
  local nchan = #names
  local head, all, tsidx, chans = KEYS[k], KEYS[k + 1], KEYS[k + 2], KEYS[k + 3]
  local state = redis.call('HMGET', head, 'seq', 'ts', 'its', 'epoch')
  local epoch = state[4]
  if not epoch then
    epoch = ARGV[1]
    redis.call('HSET', head, 'epoch', epoch)
  else
    epoch = went_back(head, tsidx, epoch, tonumber(state[1]) or 0, tonumber(state[2]) or 0,
      seen[1], tonumber(seen[2]), tonumber(seen[3]), ARGV[1]) or epoch
  end
  local last = tonumber(state[1]) or 0
  -- Redis's clock, never behind the stream's last timestamp (whatever node wrote it)
  local ts = math.max(now, tonumber(state[2]) or 0)
  local stamp = string.format('%08x-%04x-7', math.floor(ts / 65536), ts % 65536)
  local ids, out, rows, index = {}, {}, {}, {}
  for i = 1, n do
    local arg, ci, off = ARGV[a + i - 1], 1, 1
    if nchan > 1 then ci, off = struct.unpack('>I4', arg) + 1, 5 end
    local seq, channel = last + i, names[ci]
    local id = make_id(stamp, seq, arg, off)
    local data = string.sub(arg, off + 4)
    local row = struct.pack('>I4I8I8', #data, seq, ts) .. id .. data
    ids[i] = id
    out[i] = string.char(#channel) .. channel .. row
    if keep then
      local r = rows[ci] or {}
      rows[ci] = r
      r[#r + 1] = seq
      r[#r + 1] = row
      index[#index + 1] = seq
      index[#index + 1] = id .. channel
    end
  end
  if keep then
    for ci, r in pairs(rows) do zadd(KEYS[c + ci], r) end
    zadd(all, index)
    sadd(chans, names)
    if ts > (tonumber(state[3]) or 0) then
      redis.call('ZADD', tsidx, ts, last + 1)
      redis.call('HSET', head, 'its', ts)
    end
  end
  redis.call('HSET', head, 'seq', last + n, 'ts', ts)
  redis.call('PUBLISH', bus, epoch .. table.concat(out))
  return {last + 1, ts, table.concat(ids), epoch}
end
local replies, a, k = {}, 4, 1
while a <= #ARGV do
  local bus, keep, key = ARGV[a], ARGV[a + 1] == '1', ARGV[a + 2]
  local seen = {ARGV[a + 3], ARGV[a + 4], ARGV[a + 5]}
  local fp, c = false, k + 3
  a = a + 6
  if key ~= '' then
    fp, c, a = ARGV[a], k + 5, a + 1
  end
  local nchan = tonumber(ARGV[a])
  local names = {}
  for i = 1, nchan do names[i] = ARGV[a + i] end
  local n = tonumber(ARGV[a + 1 + nchan])
  a = a + 2 + nchan
  local reply = fp and recorded(KEYS[k + 4], KEYS[k + 5], key, fp, KEYS[k])
  if not reply then
    reply = append(k, c, a, bus, keep, names, n, seen)
    if fp then record(KEYS[k + 4], KEYS[k + 5], key, fp, reply[2], reply[3]) end
  end
  replies[#replies + 1] = reply
  a = a + n
  k = c + nchan + 1
end
return replies
"""

# KEYS: head, all, ts, chans. ARGV: key base, min ts_ms, max messages, how long keys
# are kept (ms). Reply: removed.
_TRIM = """
local head, all, tsidx, chans = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
-- idempotency keys past their time (of a stream that went quiet: appends expire them too)
local clock = redis.call('TIME')
local since = tonumber(clock[1]) * 1000 - tonumber(ARGV[4])
local book, booked = ARGV[1] .. 'keys', ARGV[1] .. 'keyt'
local gone = redis.call('ZRANGEBYSCORE', booked, '-inf', '(' .. since, 'LIMIT', 0, 5000)
if #gone > 0 then
  redis.call('ZREM', booked, unpack(gone))
  redis.call('HDEL', book, unpack(gone))
end
local cut = first_since(tsidx, head, ARGV[2])
local keep = tonumber(ARGV[3])
local newest = redis.call('ZREVRANGE', all, keep, keep, 'WITHSCORES')
if newest[1] then cut = math.max(cut, tonumber(newest[2]) + 1) end
local removed = redis.call('ZREMRANGEBYSCORE', all, '-inf', '(' .. cut)
if removed == 0 then return 0 end
for _, channel in ipairs(redis.call('SMEMBERS', chans)) do
  local key = ARGV[1] .. 'c:' .. channel
  redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. cut)
  if redis.call('EXISTS', key) == 0 then redis.call('SREM', chans, channel) end
end
local oldest = redis.call('ZRANGE', all, 0, 0)[1]
if oldest then
  redis.call('ZREMRANGEBYSCORE', tsidx, '-inf', '(' .. id_ms(oldest))
else
  redis.call('DEL', tsidx)
end
return removed
"""

# KEYS: head, all, ts, chans. ARGV: key base.
_DROP = """
for _, channel in ipairs(redis.call('SMEMBERS', KEYS[4])) do
  redis.call('DEL', ARGV[1] .. 'c:' .. channel)
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[1] .. 'keys', ARGV[1] .. 'keyt')
return 0
"""


class _Script:
    """A Lua script run with EVALSHA: loaded at open, loaded again if Redis forgot it
    (a restart, SCRIPT FLUSH). NOSCRIPT means it did not run, so retrying is safe."""

    def __init__(self, body: str) -> None:
        self.source = _LUA_COMMON + body
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()

    async def load(self, client: aioredis.Redis) -> None:
        await client.script_load(self.source)

    async def __call__(
        self, client: aioredis.Redis, keys: Sequence[Any], args: Sequence[Any]
    ) -> Any:
        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)  # type: ignore[misc]
        except NoScriptError:
            await self.load(client)
            return await client.evalsha(self.sha, len(keys), *keys, *args)  # type: ignore[misc]


_SCRIPTS = {
    name: _Script(body)
    for name, body in {
        "append": _APPEND,
        "replay": REPLAY,
        "page": PAGE,
        "since_seq": SINCE_SEQ,
        "trim": _TRIM,
        "drop": _DROP,
    }.items()
}


# -- the append call -------------------------------------------------------------------


def _well_formed(drafts: list[Draft]) -> bool:
    """Checked before the script runs: an error inside it would leave the writes made
    before the error in place (Lua scripts do not roll back)."""
    return all(
        isinstance(d.channel, str)
        and len(d.channel.encode()) < 256  # its length is one byte in a publish
        and isinstance(d.data_json, bytes)
        for d in drafts
    )


def _client(url: str, retry: Retry) -> aioredis.Redis:
    return aioredis.Redis.from_url(
        url,
        retry=retry,
        socket_timeout=BACKEND_TIMEOUT,
        socket_connect_timeout=BACKEND_TIMEOUT,
    )


class _AppendCall:
    """The KEYS and ARGV of one append script call, built batch by batch."""

    def __init__(self, prefix: str, policy: KeyPolicy) -> None:
        self.prefix = prefix
        self.keys: list[str] = []
        self.args: list[bytes | str | int] = [new_epoch(), policy.ttl_ms, policy.per_stream]
        self.slots: list[int] = []  # the index of each batch sent in the caller's list

    def add(self, slot: int, batch: AppendBatch, seen: Seen | None) -> None:
        base = key_base(self.prefix, batch.stream_id)
        names = list(dict.fromkeys(d.channel for d in batch.drafts))
        self.keys += [base + "head", base + "all", base + "ts", base + "chans"]
        self.args += [base + "bus", "1" if batch.keep else "0", batch.key or ""]
        self.args += NOTHING_SEEN if seen is None else seen
        if batch.key is not None:
            self.keys += [base + "keys", base + "keyt"]
            self.args.append(batch.fingerprint)
        self.keys += [base + "c:" + name for name in names]
        self.args += [len(names), *names]
        self.args.append(len(batch.drafts))
        self.args += _message_args(batch.drafts, names)
        self.slots.append(slot)


def _message_args(drafts: list[Draft], names: list[str]) -> list[bytes]:
    noise = os.urandom(4 * len(drafts))  # the random tail of each id
    if len(names) == 1:
        return [noise[4 * i : 4 * i + 4] + d.data_json for i, d in enumerate(drafts)]
    index = {name: i.to_bytes(4, "big") for i, name in enumerate(names)}
    return [index[d.channel] + noise[4 * i : 4 * i + 4] + d.data_json for i, d in enumerate(drafts)]


def _outcome(batch: AppendBatch, reply: list[Any]) -> Appended:
    """A batch's reply: its messages, or what its key was recorded with."""
    if int(reply[0]) == 0:
        ids = split_ids(bytes(reply[2]))
        answer = answer_for(batch.fingerprint, bytes(reply[1]).decode(), ids)
        if isinstance(answer, Repeat):  # same fingerprint: the same drafts, in order
            batch.epoch = bytes(reply[3]).decode()
            answer = Repeat(
                ids,
                [_rebuilt(batch.stream_id, i, d) for i, d in zip(ids, batch.drafts, strict=True)],
            )
        return answer
    return _ordered(batch, reply)


def _rebuilt(stream_id: str, message_id: str, draft: Draft) -> Message:
    """A stored message from its id (which holds its seq and timestamp) and its draft."""
    seq, ts_ms = seq_of_id(message_id), uuid7_ms(message_id)
    assert seq is not None and ts_ms is not None, message_id  # made by the append script
    return Message(message_id, stream_id, draft.channel, ts_ms, seq, draft.data_json)


def _ordered(batch: AppendBatch, reply: list[Any]) -> list[Message]:
    first, ts_ms, blob = int(reply[0]), int(reply[1]), bytes(reply[2]).decode()
    batch.epoch = bytes(reply[3]).decode()
    return [
        Message(blob[i * ID_LEN : (i + 1) * ID_LEN], batch.stream_id, d.channel, ts_ms,
                first + i, d.data_json)
        for i, d in enumerate(batch.drafts)
    ]  # fmt: skip


@guarded
class RedisHistory:
    """Implements HistoryStore on Redis, shared by every node of a cluster."""

    def __init__(self, url: str, prefix: str = "bloomr") -> None:
        self.url = url
        self.prefix = prefix
        self._reads: aioredis.Redis | None = None
        self._writes: aioredis.Redis | None = None
        self.key_policy = KeyPolicy()  # idempotency keys: how long, how many per stream

    async def open(self) -> None:
        # Reads are retried once on a broken connection (one left over from before a
        # restart of Redis), never on a timeout: a frozen Redis is answered `unavailable`
        # within BACKEND_TIMEOUT.
        reads = Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,))
        self._reads = _client(self.url, reads)
        # An append is never retried by the client: its script may have run before the
        # connection broke, and running it again would store the messages twice.
        self._writes = _client(self.url, Retry(NoBackoff(), 0))
        for script in _SCRIPTS.values():
            await script.load(self._reads)

    async def close(self) -> None:
        for client in (self._reads, self._writes):
            if client is not None:
                await client.aclose()
        self._reads = self._writes = None

    @property
    def client(self) -> aioredis.Redis:
        assert self._reads is not None, "history is not open"
        return self._reads

    def _keys(self, stream_id: str, channel: str | None = None) -> list[str]:
        base = key_base(self.prefix, stream_id)
        keys = [base + "head", base + "all", base + "ts"]
        return keys + [base + "chans" if channel is None else base + "c:" + channel]

    def try_append_now(self, batches: Sequence[AppendBatch]) -> list[Appended] | None:
        return None  # every append is a round trip to Redis

    async def append(
        self, batches: Sequence[AppendBatch], seen: SeenOf = lambda _: None
    ) -> list[Appended]:
        """`HistoryStore.append`; `seen` gives the last message of a stream the caller
        delivered, to notice a history that went back (`went_back`) before appending."""
        results: list[Appended] = [[] for _ in batches]
        call = _AppendCall(self.prefix, self.key_policy)
        for slot, batch in enumerate(batches):
            if not _well_formed(batch.drafts):
                results[slot] = BloomrError("internal", "storing messages failed: bad draft")
            elif batch.drafts:
                call.add(slot, batch, seen(batch.stream_id))
        if not call.slots:
            return results
        assert self._writes is not None, "history is not open"
        try:
            replies = await _SCRIPTS["append"](self._writes, call.keys, call.args)
        except Exception as exc:
            error = as_error(exc, "storing messages")
            for slot in call.slots:
                results[slot] = error
            return results
        for slot, reply in zip(call.slots, replies, strict=True):
            results[slot] = _outcome(batches[slot], reply)
        return results

    async def replay(self, query: HistoryQuery) -> ReplaySlice:
        kind, value, after_id = start_args(query)
        newest = "" if query.newest is None else query.newest
        args = (kind, value, after_id, newest, *page_args(query))
        keys = self._keys(query.stream_id, query.channel)
        reply = await _SCRIPTS["replay"](self.client, keys, args)
        head, matched, boundary, unknown, members, epoch, count = reply
        return ReplaySlice(
            messages=read_rows(query.stream_id, query.channel, members),
            matched=int(matched),
            backfill_after_id=None if boundary is None else bytes(boundary).decode(),
            head_seq=int(head),
            unknown_id=bool(unknown),
            epoch=bytes(epoch).decode(),
            count=int(count),
        )

    async def head(self, stream_id: str) -> tuple[int, str]:
        """The stream's last seq and its history's epoch."""
        seq, epoch = await self.client.hmget(
            key_base(self.prefix, stream_id) + "head", ["seq", "epoch"]
        )
        if seq is None:
            return 0, ""
        return int(seq), epoch.decode() if isinstance(epoch, bytes) else ""

    async def page(self, query: HistoryQuery) -> list[Message]:
        kind, value, after = start_args(replace(query, window=None))
        since = "" if query.since_ms is None else query.since_ms
        until = "+inf" if query.until_seq is None else query.until_seq
        exact = "1" if query.exact else ""
        args = (kind, value, after, since, until, *page_args(query), exact)
        keys = self._keys(query.stream_id, query.channel)
        reply = await _SCRIPTS["page"](self.client, keys, args)
        if not reply[0]:
            raise BloomrError(
                "unknown_message_id", f"message {after} is not in this stream's history"
            )
        if reply[0] == 2:
            raise HistoryGap(f"messages after seq {value} were trimmed")
        return read_rows(query.stream_id, query.channel, reply[1])

    async def since_seq(
        self, stream_id: str, after_seq: int, limit: int, seen: Seen | None = None
    ) -> tuple[str, list[Message]]:
        """The history's epoch ("" when it has none: lost, not made again yet) and its
        stored messages of every channel with seq > `after_seq`, the oldest `limit`, in
        seq order, from one snapshot: what the bus reads to fill a gap in what it
        received, and to notice a history that was lost meanwhile. With `seen` (the
        reader's last delivered message), a history that went back under the same
        epoch gets a new one first (see `SINCE_SEQ`); a new epoch's reads start after
        the seq where it began."""
        base = key_base(self.prefix, stream_id)
        args = (base, after_seq, limit, *(seen or NOTHING_SEEN), new_epoch())
        keys = [base + "head", base + "all", base + "ts"]
        epoch, *flat = await _SCRIPTS["since_seq"](self.client, keys, args)
        pairs = zip(flat[::2], flat[1::2], strict=True)
        found = [m for ch, row in pairs if row for m in read_rows(stream_id, ch.decode(), row)]
        return bytes(epoch).decode(), found

    async def drop(self, stream_id: str) -> None:
        base = key_base(self.prefix, stream_id)
        await _SCRIPTS["drop"](self.client, self._keys(stream_id), (base,))

    async def trim(self, stream_id: str, min_ts_ms: int, max_messages: int) -> int:
        base = key_base(self.prefix, stream_id)
        args = (base, min_ts_ms, max_messages, self.key_policy.ttl_ms)
        return int(await _SCRIPTS["trim"](self.client, self._keys(stream_id), args))
