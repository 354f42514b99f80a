"""The Lua scripts behind the Redis backends: each check-and-change is one atomic script.

Times are Redis's own clock (``TIME``), so processes on several hosts agree on lease expiry
whatever their clocks say. Leases and log entries are sorted-set members scored by time.
"""

from __future__ import annotations

_NOW = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"""

# A budget account is a hash (used, reserved, r:<lease> = tokens) and a sorted set of leases.
_PRUNE = """
local function prune(account, leases, now)
  local expired = redis.call('ZRANGEBYSCORE', leases, '-inf', now)
  if #expired == 0 then return end
  local freed = 0
  for _, id in ipairs(expired) do
    freed = freed + tonumber(redis.call('HGET', account, 'r:' .. id) or '0')
    redis.call('HDEL', account, 'r:' .. id)
  end
  redis.call('ZREMRANGEBYSCORE', leases, '-inf', now)
  redis.call('HINCRBY', account, 'reserved', -freed)
end
"""

# KEYS: account, leases. ARGV: lease id, tokens, limit (0: none), lease ms, expire-at (unix s),
# seed ('' when none). Answers nil when the account is unknown and no seed was given.
RESERVE = (
    _NOW
    + _PRUNE
    + """
local used = redis.call('HGET', KEYS[1], 'used')
if not used then
  if ARGV[6] == '' then return nil end
  used = ARGV[6]
  redis.call('HSET', KEYS[1], 'used', used, 'reserved', 0)
end
used = tonumber(used)
local now = now_ms()
prune(KEYS[1], KEYS[2], now)
redis.call('EXPIREAT', KEYS[1], ARGV[5])
local reserved = tonumber(redis.call('HGET', KEYS[1], 'reserved') or '0')
local tokens = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
if limit > 0 and used + reserved + tokens > limit then
  return {0, used, reserved}
end
redis.call('HSET', KEYS[1], 'r:' .. ARGV[1], tokens)
redis.call('HINCRBY', KEYS[1], 'reserved', tokens)
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[4]), ARGV[1])
redis.call('EXPIREAT', KEYS[2], ARGV[5])
return {1, used, reserved + tokens}
"""
)

# KEYS: account, leases. ARGV: lease id, tokens used, expire-at, seed ('' when none).
SETTLE = """
if not redis.call('HGET', KEYS[1], 'used') then
  if ARGV[4] == '' then return nil end
  redis.call('HSET', KEYS[1], 'used', ARGV[4], 'reserved', 0)
end
local held = redis.call('HGET', KEYS[1], 'r:' .. ARGV[1])
if held then
  redis.call('HDEL', KEYS[1], 'r:' .. ARGV[1])
  redis.call('HINCRBY', KEYS[1], 'reserved', -tonumber(held))
  redis.call('ZREM', KEYS[2], ARGV[1])
end
local total = redis.call('HINCRBY', KEYS[1], 'used', ARGV[2])
redis.call('EXPIREAT', KEYS[1], ARGV[3])
return total
"""

# KEYS: account, leases. Answers {used, reserved}, or nil for an unknown account.
STATE = (
    _NOW
    + _PRUNE
    + """
local used = redis.call('HGET', KEYS[1], 'used')
if not used then return nil end
prune(KEYS[1], KEYS[2], now_ms())
return {tonumber(used), tonumber(redis.call('HGET', KEYS[1], 'reserved') or '0')}
"""
)

# KEYS: lease sets. ARGV: lease ms, '1' to also push out each set's own expiry, then one
# member per key. A lease that already expired is not revived: its hold was given back.
RENEW = (
    _NOW
    + """
local now = now_ms()
local lease = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  local score = redis.call('ZSCORE', key, ARGV[i + 2])
  if score and tonumber(score) > now then
    redis.call('ZADD', key, 'XX', now + lease, ARGV[i + 2])
    if ARGV[2] == '1' then redis.call('PEXPIRE', key, lease) end
  end
end
return 0
"""
)

# KEYS: the log. ARGV: limit, window ms, a unique member. Answers -1 when counted, else the
# milliseconds until a request would fit.
RATE_HIT = (
    _NOW
    + """
local now = now_ms()
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return math.max(0, tonumber(oldest[2]) + window - now)
end
redis.call('ZADD', KEYS[1], now, ARGV[3])
redis.call('PEXPIRE', KEYS[1], window)
return -1
"""
)

# KEYS: the slot set. ARGV: limit, lease ms, slot id. Answers 1 when acquired.
SLOT_ACQUIRE = (
    _NOW
    + """
local now = now_ms()
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""
)

# KEYS: one failure log per key. ARGV: max failures, window ms, the attempt's id. The check
# and the count in one step (two round trips let a parallel burst pass the check together):
# answers the milliseconds until every key may try again, counting nothing, or -1 when the
# attempt was counted against every key.
THROTTLE_ATTEMPT = (
    _NOW
    + """
local now = now_ms()
local max = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local wait = -1
for _, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
  local n = redis.call('ZCARD', key)
  if n >= max then
    local entry = redis.call('ZRANGE', key, n - max, n - max, 'WITHSCORES')
    wait = math.max(wait, tonumber(entry[2]) + window - now)
  end
end
if wait >= 0 then return math.max(1, wait) end
for _, key in ipairs(KEYS) do
  redis.call('ZADD', key, now, ARGV[3])
  redis.call('ZREMRANGEBYRANK', key, 0, -(max + 1))
  redis.call('PEXPIRE', key, window)
end
return -1
"""
)
