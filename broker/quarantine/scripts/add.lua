-- Quarantine entries (or none: only the bounds), then the bounds: entries older than the retention
-- leave, then the oldest beyond the maximum count. Both keys expire after the retention when idle.
-- KEYS[1] entries   hash  id -> entry document
-- KEYS[2] order     zset  id -> quarantined at (Unix ms)
-- ARGV[1] now (Unix ms), ARGV[2] retention (ms), ARGV[3] maximum entries, then id, document pairs
-- returns {entries that were not there before, entries that left by the bounds}
local now, retention, most = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local added = 0
for i = 4, #ARGV, 2 do
  added = added + redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  redis.call('ZADD', KEYS[2], now, ARGV[i])
end
local gone = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. (now - retention))
local excess = redis.call('ZCARD', KEYS[2]) - #gone - most
if excess > 0 then
  local oldest = redis.call('ZRANGE', KEYS[2], #gone, #gone + excess - 1)
  for _, id in ipairs(oldest) do gone[#gone + 1] = id end
end
for _, id in ipairs(gone) do
  redis.call('HDEL', KEYS[1], id)
  redis.call('ZREM', KEYS[2], id)
end
if #ARGV > 3 then
  redis.call('PEXPIRE', KEYS[1], retention)
  redis.call('PEXPIRE', KEYS[2], retention)
end
return {added, #gone}
