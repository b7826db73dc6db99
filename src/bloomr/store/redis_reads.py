"""The read scripts of the Redis history (`redis_history.py`), and their arguments:
replays, pages, and what the bus reads to fill a gap. Each runs after the history's
shared Lua functions (`held`, `first_since`, ...)."""

from __future__ import annotations

from ..model import Message
from ..replay import AfterId, AfterSeq, Since
from .base import HistoryQuery
from .redis_layout import seq_of_id

_PAGE_FROM = """
-- a page: the channel's oldest rows with first <= seq <= last, at most `limit`, ending
-- with the one whose messages pass `budget` bytes (Message.size: the data, plus
-- `overhead` each), joined oldest first. Read one row, then as many as the rest of the
-- budget holds at that size: a page of big messages copies few more than it returns.
local function page_from(ch, first, last, limit, budget, overhead)
  local out, size, n, step = {}, 0, 0, 1
  while n < limit and size < budget do
    local rows = redis.call('ZRANGEBYSCORE', ch, first, last, 'WITHSCORES',
      'LIMIT', 0, math.min(step, limit - n))
    if #rows == 0 then break end
    for i = 1, #rows, 2 do
      n = n + 1
      out[n] = rows[i]
      size = size + #rows[i] - 56 + overhead
      first = tonumber(rows[i + 1]) + 1
      if size >= budget then break end
    end
    step = math.max(1, math.min(1000, math.floor((budget - size) * n / size)))
  end
  return table.concat(out)
end
"""

# KEYS: head, all, ts, channel. ARGV: kind (all|after|seq|since|window), value (the
# id's seq | a seq | ts_ms | window), id (after) or epoch (seq), newest ('' for all),
# then the first page's limit, bytes and overhead per message.
# Reply: {head seq, matched, backfill id or false, unknown (1/0), the first page's rows
# joined, epoch, count}.
REPLAY = (
    _PAGE_FROM
    + """
local head, all, tsidx, ch = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local kind, value, newest = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[4])
local first, boundary, lazy, unknown = 0, false, false, 0
local function forget_start()
  unknown = 1
  if newest then kind, value = 'window', newest else kind = 'all' end
end
if kind == 'after' then
  local seq = held(all, value, ARGV[3])
  if seq then
    first, boundary = seq + 1, ARGV[3]
  else
    forget_start()
  end
elseif kind == 'seq' then
  local epoch = epoch_of(head)
  local same = ARGV[3] == epoch or (ARGV[3] == '' and value == 0)
  if same and holds_after(head, all, value) then
    first, lazy = value + 1, true
  else
    forget_start()
  end
end
if kind == 'since' then
  first, lazy = first_since(tsidx, head, ARGV[2]), true
elseif kind == 'window' then
  local r = redis.call('ZREVRANGE', ch, value, value, 'WITHSCORES')
  if r[1] then first, boundary = tonumber(r[2]) + 1, row_id(r[1]) end
end
local matched = redis.call('ZCOUNT', ch, first, '+inf')
local count = math.min(newest or matched, matched)
local rows = ''
if count < matched then
  if lazy then
    local before = redis.call('ZREVRANGEBYSCORE', ch, '(' .. first, '-inf', 'LIMIT', 0, 1)[1]
    if before then boundary = row_id(before) end
  end
  -- the newest `count` of a suffix of the channel are the channel's newest
  if count > 0 then
    first = tonumber(redis.call('ZREVRANGE', ch, count - 1, count - 1, 'WITHSCORES')[2])
  end
end
if count > 0 then
  local limit = math.min(tonumber(ARGV[5]), count)
  rows = page_from(ch, first, '+inf', limit, tonumber(ARGV[6]), tonumber(ARGV[7]))
end
return {head_seq(head), matched, boundary, unknown, rows, epoch_of(head), count}
"""
)

# KEYS: head, all, ts, channel. ARGV: kind (all|after|seq|since), value (the after id's
# seq | a seq | ts_ms), id (after) or epoch (seq), since ts_ms ('' for none), last seq
# ('+inf' for none), limit, bytes, overhead per message, exact ('1': a seq start whose
# next messages were trimmed is refused).
# Reply: {0} for an unknown id, {2} for an exact start with messages trimmed after it,
# else {1, rows joined}.
PAGE = (
    _PAGE_FROM
    + """
local kind, value, first = ARGV[1], tonumber(ARGV[2]), 0
if kind == 'after' then
  local seq = held(KEYS[2], value, ARGV[3])
  if not seq then return {0} end
  first = seq + 1
elseif kind == 'seq' then
  if epoch_of(KEYS[1]) ~= ARGV[3] then return {1, ''} end
  if ARGV[9] == '1' and not holds_after(KEYS[1], KEYS[2], value) then return {2} end
  first = value + 1
elseif kind == 'since' then
  first = first_since(KEYS[3], KEYS[1], value)
end
if ARGV[4] ~= '' then first = math.max(first, first_since(KEYS[3], KEYS[1], ARGV[4])) end
local rows = page_from(KEYS[4], first, ARGV[5], tonumber(ARGV[6]), tonumber(ARGV[7]),
  tonumber(ARGV[8]))
return {1, rows}
"""
)

# KEYS: head, all, ts. ARGV: key base, after seq, limit, then what the reader delivered
# last: its epoch ('' for nothing), seq and ts_ms, and an epoch to make if the history
# went back (`went_back`). A new epoch's reads start after its base: what was
# delivered before is not delivered again. Reply: the history's epoch ('' when it has
# no head), then channel, row, channel, row, ... Channel keys are built here: they
# share the stream's hash tag, so its slot.
SINCE_SEQ = """
local head = KEYS[1]
local state = redis.call('HMGET', head, 'seq', 'ts', 'epoch')
local epoch = state[3] or ''
epoch = went_back(head, KEYS[3], epoch, tonumber(state[1]) or 0, tonumber(state[2]) or 0,
  ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7]) or epoch
local after = math.max(tonumber(ARGV[2]), tonumber(redis.call('HGET', head, 'base')) or 0)
local rows = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. after, '+inf',
  'WITHSCORES', 'LIMIT', 0, ARGV[3])
local out = {epoch}
for i = 1, #rows, 2 do
  local channel, seq = string.sub(rows[i], 37), rows[i + 1]
  out[#out + 1] = channel
  out[#out + 1] = redis.call('ZRANGEBYSCORE', ARGV[1] .. 'c:' .. channel, seq, seq)[1]
end
return out
"""


def start_args(query: HistoryQuery) -> tuple[str, int, str]:
    start = query.start
    if isinstance(start, AfterId):
        return "after", seq_of_id(start.id) or 0, start.id
    if isinstance(start, AfterSeq):
        return "seq", start.seq, start.epoch
    if isinstance(start, Since):
        return "since", start.ts_ms, ""
    if query.window is not None:
        return "window", query.window, ""
    return "all", 0, ""


def page_args(query: HistoryQuery) -> tuple[int, int, int]:
    """A page's limit, bytes and per-message overhead."""
    budget = NO_BOUND if query.max_bytes is None else query.max_bytes
    return query.limit, budget, MESSAGE_OVERHEAD


NO_BOUND = 1 << 52  # exact in Lua's numbers
MESSAGE_OVERHEAD = Message("", "", "", 0, 0, b"").size  # what Message.size adds to the data
