"""The Lua scripts behind ``RedisStore``: every write that must be atomic across replicas.

Redis runs a script as one indivisible command, so a check and the write it guards (dedupe on the
turn id, the fencing-token check, "update only if the session still exists") cannot interleave with
another replica's commands — the same guarantee ``SqliteStore`` gets from one-statement writes.
Kept apart from ``redis.py`` so the whole server-side logic can be read (and reviewed) in one place.

Conventions: every fenced write takes the lease hash as ``KEYS[1]`` and the fencing token as
``ARGV[1]`` (empty: not fenced); it answers -1 for a stale fence, 0 for a missing record, 1 done.
Timestamps travel as strings and are stored unparsed, so Python's float repr round-trips exactly.
"""

from __future__ import annotations

from typing import Final

# A fence is live while the lease hash exists (PEXPIRE drops it at expiry) with the same token.
_STALE: Final = """
local function stale()
  if ARGV[1] == '' then return false end
  return redis.call('HGET', KEYS[1], 'token') ~= ARGV[1]
end
"""

# KEYS: turn, seq counter, conversation zset, conversation-unfinished zset, unfinished zset.
# ARGV: turn_id, fixed json, mutable json, state, final ('1'/'0'), created_at, updated_at.
ADD_TURN: Final = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local seq = redis.call('INCR', KEYS[2])
redis.call('HSET', KEYS[1], 'seq', seq, 'fixed', ARGV[2], 'mut', ARGV[3], 'state', ARGV[4],
  'created_at', ARGV[6], 'updated_at', ARGV[7], 'delivery', '{}')
redis.call('ZADD', KEYS[3], seq, ARGV[1])
redis.call('PERSIST', KEYS[3])  -- a conversation with an unfinished turn never expires
if ARGV[5] == '0' then
  redis.call('ZADD', KEYS[4], seq, ARGV[1])
  redis.call('ZADD', KEYS[5], seq, ARGV[1])
end
return seq
"""

# KEYS: lease, turn, conversation-unfinished zset, unfinished zset, conversation zset, session,
#   then one feedback-index key per Teams activity the turn sent (final saves only).
# ARGV: token, turn_id, mutable json, state, final ('1'/'0'), updated_at; final saves add:
#   retention in ms, fixed json without the text, the delivery record without the answer text,
#   the prefix of turn keys.
# A finished turn, its index keys and (once nothing in it is unfinished) its conversation expire
# after the retention period; the session mapping's expiry is pushed back as well. The oldest
# members of the conversation zset whose turns already expired are dropped, so it stays bounded.
SAVE_TURN: Final = (
    _STALE
    + """
if stale() then return -1 end
local seq = redis.call('HGET', KEYS[2], 'seq')
if not seq then return 0 end
redis.call('HSET', KEYS[2], 'mut', ARGV[3], 'state', ARGV[4], 'updated_at', ARGV[6])
if ARGV[5] == '1' then
  redis.call('ZREM', KEYS[3], ARGV[2])
  redis.call('ZREM', KEYS[4], ARGV[2])
  local ttl = ARGV[7]
  redis.call('HSET', KEYS[2], 'fixed', ARGV[8], 'delivery', ARGV[9])
  redis.call('PEXPIRE', KEYS[2], ttl)
  for i = 7, #KEYS do redis.call('SET', KEYS[i], ARGV[2], 'PX', ttl) end
  if redis.call('EXISTS', KEYS[3]) == 0 then redis.call('PEXPIRE', KEYS[5], ttl) end
  redis.call('PEXPIRE', KEYS[6], ttl)
  for _, id in ipairs(redis.call('ZRANGE', KEYS[5], 0, 9)) do
    if redis.call('EXISTS', ARGV[10] .. id) == 0 then redis.call('ZREM', KEYS[5], id) end
  end
else
  redis.call('ZADD', KEYS[3], seq, ARGV[2])
  redis.call('ZADD', KEYS[4], seq, ARGV[2])
end
return 1
"""
)

# KEYS: lease, turn. ARGV: token, delivery json, the same without the answer text, the final
# states (",a,b,"): a finished turn keeps no answer text, even if a sink writes after its end.
SAVE_DELIVERY: Final = (
    _STALE
    + """
if stale() then return -1 end
local state = redis.call('HGET', KEYS[2], 'state')
if not state then return 0 end
local data = ARGV[2]
if string.find(ARGV[4], ',' .. state .. ',', 1, true) then data = ARGV[3] end
redis.call('HSET', KEYS[2], 'delivery', data)
return 1
"""
)

# KEYS: lease, session. ARGV: token, session_id, last_event_id ('' = none), show_progress,
# created_at, updated_at, retention in ms. The creation time survives an upsert that keeps the
# session id; a mapping idle for the retention period expires (the next message starts afresh).
PUT_SESSION: Final = (
    _STALE
    + """
if stale() then return -1 end
local created = ARGV[5]
if redis.call('HGET', KEYS[2], 'session_id') == ARGV[2] then
  created = redis.call('HGET', KEYS[2], 'created_at') or created
end
redis.call('HSET', KEYS[2], 'session_id', ARGV[2], 'last_event_id', ARGV[3],
  'show_progress', ARGV[4], 'created_at', created, 'updated_at', ARGV[6])
redis.call('PEXPIRE', KEYS[2], ARGV[7])
return 1
"""
)

# KEYS: lease, session. ARGV: token.
DELETE_SESSION: Final = (
    _STALE
    + """
if stale() then return -1 end
redis.call('DEL', KEYS[2])
return 1
"""
)

# KEYS: lease, session. ARGV: token, last_event_id, updated_at, retention in ms. No-op once the
# session is gone.
SET_SESSION_CURSOR: Final = (
    _STALE
    + """
if stale() then return -1 end
if redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
redis.call('HSET', KEYS[2], 'last_event_id', ARGV[2], 'updated_at', ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return 1
"""
)

# KEYS: lease, token counter. ARGV: owner, ttl in ms. Expiry is Redis's own clock (PEXPIRE), so
# replicas with skewed wall clocks still agree on when a lease ends.
ACQUIRE_LEASE: Final = """
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
local token = redis.call('INCR', KEYS[2])
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'token', token)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return token
"""

# KEYS: lease. ARGV: owner, token, ttl in ms.
RENEW_LEASE: Final = """
local held = redis.call('HMGET', KEYS[1], 'owner', 'token')
if held[1] ~= ARGV[1] or held[2] ~= ARGV[2] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""

# KEYS: lease. ARGV: owner, token.
RELEASE_LEASE: Final = """
local held = redis.call('HMGET', KEYS[1], 'owner', 'token')
if held[1] ~= ARGV[1] or held[2] ~= ARGV[2] then return 0 end
redis.call('DEL', KEYS[1])
return 1
"""
