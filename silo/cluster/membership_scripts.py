"""The membership's Lua scripts: every change to the members hash is one atomic script.

Rows: one JSON record per silo incarnation in the ``members`` hash. A row is
``active`` or ``leaving`` while its lease holds, then ``dead`` (lease lapsed,
declared by whoever notices first) or ``left`` (graceful leave). Dead and left
rows are deleted once they are ``retention`` old, and a silo that rejoins with
the same id deletes its older rows at once, so the hash stays about as small as
the cluster and every full read stays cheap. A deleted row means "gone": a
renewal of a missing row is refused, exactly as for a dead one.
"""

from __future__ import annotations

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function live(rec) return rec.state == 'active' or rec.state == 'leaving' end
local function bump()
  local v = redis.call('INCR', KEYS[2])
  redis.call('PUBLISH', KEYS[3], v)
  return v
end
"""

# KEYS: members, version, channel. ARGV: incarnation, record json, lease ms.
JOIN = _NOW + """
local rec = cjson.decode(ARGV[2])
rec.state = 'active'
rec.lease_until = now + tonumber(ARGV[3])
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local other = cjson.decode(all[i + 1])
  if other.silo_id == rec.silo_id then
    redis.call('HDEL', KEYS[1], all[i])
  end
end
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(rec))
return bump()
"""

# KEYS: members, version, channel. ARGV: incarnation, lease ms, new state ('' = keep).
RENEW = _NOW + """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return {'dead', 0} end
local rec = cjson.decode(raw)
if not live(rec) then return {'dead', 0} end
if rec.lease_until < now then
  rec.state = 'dead'
  rec.died_at = now
  redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(rec))
  bump()
  return {'dead', 0}
end
rec.lease_until = now + tonumber(ARGV[2])
local changed = ARGV[3] ~= '' and ARGV[3] ~= rec.state
if changed then rec.state = ARGV[3] end
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(rec))
local version = tonumber(redis.call('GET', KEYS[2]) or '0')
if changed then version = bump() end
return {'ok', version}
"""

# KEYS: members, version, channel. ARGV: retention ms for dead and left rows.
READ = _NOW + """
local all = redis.call('HGETALL', KEYS[1])
local changed = false
local out = {}
for i = 1, #all, 2 do
  local rec = cjson.decode(all[i + 1])
  if live(rec) and rec.lease_until < now then
    rec.state = 'dead'
    rec.died_at = now
    redis.call('HSET', KEYS[1], all[i], cjson.encode(rec))
    changed = true
  end
  if not live(rec) and now - (rec.died_at or 0) > tonumber(ARGV[1]) then
    redis.call('HDEL', KEYS[1], all[i])
    changed = true
  else
    table.insert(out, cjson.encode(rec))
  end
end
local version = tonumber(redis.call('GET', KEYS[2]) or '0')
if changed then version = bump() end
table.insert(out, 1, tostring(version))
return out
"""

# KEYS: members, version, channel. ARGV: incarnation. A dead row stays dead.
LEAVE = _NOW + """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return 0 end
local rec = cjson.decode(raw)
if not live(rec) then return 0 end
rec.state = 'left'
rec.died_at = now
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(rec))
return bump()
"""
