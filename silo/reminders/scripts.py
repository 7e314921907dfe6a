"""The Lua that changes reminders: each script is atomic, which is what makes two silos that
both believe they own a partition (a view change in progress) harmless: a tick is claimed by
whoever runs CLAIM first, and the other finds nothing due.

Times are the store's clock (``TIME``, in ms). Numbers pass through Lua doubles: ms since the
epoch have 13 digits, exact in a double and printed in full by Lua's ``%.14g``.
"""

from __future__ import annotations

_COMMON = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function update_head(due, heads, partition)
  local first = redis.call('ZRANGE', due, 0, 0, 'WITHSCORES')
  if first[2] then
    redis.call('ZADD', heads, first[2], partition)
  else
    redis.call('ZREM', heads, partition)
  end
end
"""

# KEYS: due, defs, claims, heads, grain set
# ARGV: member, name, due delay ms, period ms, per-grain limit, runtime (0/1), partition
# -> {1, first due ms} or {-1, count} when the grain already has `limit` user reminders.
# Re-registering replaces the schedule and drops a claim in progress (the tick being delivered
# then completes as "gone" and does not move the new schedule).
REGISTER = _COMMON + """
local member, name = ARGV[1], ARGV[2]
if ARGV[6] == '0' and redis.call('SISMEMBER', KEYS[5], name) == 0 then
  local count = 0
  for _, n in ipairs(redis.call('SMEMBERS', KEYS[5])) do
    if string.sub(n, 1, 1) ~= '$' then count = count + 1 end
  end
  if count >= tonumber(ARGV[5]) then return {-1, count} end
end
local at = now_ms() + tonumber(ARGV[3])
redis.call('SADD', KEYS[5], name)
redis.call('HSET', KEYS[2], member, ARGV[4] .. '|0|')
redis.call('HDEL', KEYS[3], member)
redis.call('ZADD', KEYS[1], at, member)
update_head(KEYS[1], KEYS[4], ARGV[7])
return {1, at}
"""

# KEYS: due, defs, claims, heads, grain set; ARGV: member, name, partition -> 1 removed, 0 not
UNREGISTER = _COMMON + """
local removed = redis.call('SREM', KEYS[5], ARGV[2])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
if redis.call('ZREM', KEYS[1], ARGV[1]) == 1 then update_head(KEYS[1], KEYS[4], ARGV[3]) end
return removed
"""

# KEYS: heads; ARGV: limit -> {now ms, partition, partition, ...} with something due now
DUE_PARTITIONS = _COMMON + """
local now = now_ms()
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
table.insert(due, 1, tostring(now))
return due
"""

# KEYS: due, claims, defs, heads; ARGV: partition, incarnation, lease ms, limit
# Claims up to `limit` entries whose score is due: an unclaimed tick (score = its due time) or
# a claim whose deadline passed (score = that deadline; the claim keeps the tick's scheduled
# time). The score moves to now + lease, the claim records who and which tick.
# -> {now, member, scheduled ms, definition, attempt, member, ...}
CLAIM = _COMMON + """
local now = now_ms()
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'WITHSCORES', 'LIMIT', 0,
                       tonumber(ARGV[4]))
local out = {tostring(now)}
local deadline = now + tonumber(ARGV[3])
for i = 1, #due, 2 do
  local member, score = due[i], due[i + 1]
  local def = redis.call('HGET', KEYS[3], member)
  if not def then
    redis.call('ZREM', KEYS[1], member)
    redis.call('HDEL', KEYS[2], member)
  else
    local scheduled, attempt = score, 0
    local claim = redis.call('HGET', KEYS[2], member)
    if claim then
      local s, a = string.match(claim, '^([^|]*)|([^|]*)|')
      scheduled, attempt = s, tonumber(a)
    end
    attempt = attempt + 1
    redis.call('ZADD', KEYS[1], deadline, member)
    redis.call('HSET', KEYS[2], member, scheduled .. '|' .. attempt .. '|' .. ARGV[2])
    table.insert(out, member)
    table.insert(out, scheduled)
    table.insert(out, def)
    table.insert(out, tostring(attempt))
  end
end
if #due > 0 then update_head(KEYS[1], KEYS[4], ARGV[1]) end
return out
"""

# KEYS: due, claims, defs, heads
# ARGV: partition, member, incarnation, scheduled ms, outcome, retry delay ms,
#       max undeliverable, disabled reason
# outcome: "ok" / "failed" (the hook ran, or raised: advance to the next period),
# "undeliverable" (no such grain type or hook: advance, count; disable after the max),
# "retry" (the tick did not run: keep the claim, due again after the delay).
# -> "advanced", "retry", "disabled", "gone" (unregistered or re-registered meanwhile) or
#    "lost" (the claim is no longer ours: it expired and another silo took it).
COMPLETE = _COMMON + """
local member = ARGV[2]
local claim = redis.call('HGET', KEYS[2], member)
if not claim then return 'gone' end
local s, a, by = string.match(claim, '^([^|]*)|([^|]*)|(.*)$')
if by ~= ARGV[3] or s ~= ARGV[4] then return 'lost' end
local def = redis.call('HGET', KEYS[3], member)
if not def then
  redis.call('HDEL', KEYS[2], member)
  if redis.call('ZREM', KEYS[1], member) == 1 then update_head(KEYS[1], KEYS[4], ARGV[1]) end
  return 'gone'
end
local period_s, fails_s = string.match(def, '^([^|]*)|([^|]*)|')
local period, fails = tonumber(period_s), tonumber(fails_s)
local now = now_ms()
local outcome = ARGV[5]
if outcome == 'retry' then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[6]), member)
  update_head(KEYS[1], KEYS[4], ARGV[1])
  return 'retry'
end
redis.call('HDEL', KEYS[2], member)
local result = 'advanced'
if outcome == 'undeliverable' then
  fails = fails + 1
  if fails >= tonumber(ARGV[7]) then
    redis.call('HSET', KEYS[3], member, period_s .. '|' .. fails .. '|' .. ARGV[8])
    redis.call('ZREM', KEYS[1], member)
    update_head(KEYS[1], KEYS[4], ARGV[1])
    return 'disabled'
  end
  redis.call('HSET', KEYS[3], member, period_s .. '|' .. fails .. '|')
elseif fails ~= 0 then
  redis.call('HSET', KEYS[3], member, period_s .. '|0|')
end
local scheduled = tonumber(s)
local following = scheduled + period
if following <= now then
  following = scheduled + period * (math.floor((now - scheduled) / period) + 1)
end
redis.call('ZADD', KEYS[1], following, member)
update_head(KEYS[1], KEYS[4], ARGV[1])
return result
"""

# KEYS: due, claims, heads; ARGV: partition, member, dead incarnation
# A claim held by a silo known to be dead becomes due now (keeping its scheduled time), so the
# partition's owner fires it without waiting for the claim deadline. -> 1 released, 0 not ours
RELEASE_DEAD = _COMMON + """
local claim = redis.call('HGET', KEYS[2], ARGV[2])
if not claim then return 0 end
local by = string.match(claim, '^[^|]*|[^|]*|(.*)$')
if by ~= ARGV[3] then return 0 end
redis.call('ZADD', KEYS[1], now_ms(), ARGV[2])
update_head(KEYS[1], KEYS[3], ARGV[1])
return 1
"""
