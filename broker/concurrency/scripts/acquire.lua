-- Take a permit if the pool has room for the caller after everyone queued ahead of it; otherwise
-- refuse, or (ARGV[4] > 0) queue the caller in arrival order (Redis time) so that waiters on every
-- replica are served first come, first served. Expired holders (crashed replicas) and waiters that
-- stopped asking (gave up, crashed) are evicted first.
-- KEYS[1] pool          {broker:fn:<name>}:permits (reserved) or {broker:account}:permits
--                       zset holder -> expiry (Unix ms)
-- KEYS[2] queue         <pool>:waiters   zset waiter -> arrival (Unix µs)
-- KEYS[3] queue expiry  <pool>:waiting   zset waiter -> expiry (Unix ms)
-- ARGV[1] holder id     unique per guarded piece of work (the same id while it waits)
-- ARGV[2] limit         permits in the pool, read from the config at acquire time
-- ARGV[3] ttl ms        the holder must renew before this runs out
-- ARGV[4] wait ttl ms   0: never queue; else queue (or stay queued) and ask again before this runs out
-- returns {1, in use, queued} when acquired, {0, in use, queued} when not (queued: waiters left in line)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[3])
local wait_ttl = tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local gone = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)
for _, waiter in ipairs(gone) do
  redis.call('ZREM', KEYS[2], waiter)
  redis.call('ZREM', KEYS[3], waiter)
end
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
  return {1, redis.call('ZCARD', KEYS[1]), redis.call('ZCARD', KEYS[2])}
end
local used = redis.call('ZCARD', KEYS[1])
local free = tonumber(ARGV[2]) - used
local ahead = redis.call('ZRANK', KEYS[2], ARGV[1])
local queued = redis.call('ZCARD', KEYS[2])
if not ahead then
  ahead = queued  -- a newcomer stands behind everyone already queued
end
if ahead < free then
  if queued > 0 then
    redis.call('ZREM', KEYS[2], ARGV[1])
    redis.call('ZREM', KEYS[3], ARGV[1])
    queued = redis.call('ZCARD', KEYS[2])
  end
  redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
  redis.call('PEXPIRE', KEYS[1], ttl * 2)
  return {1, used + 1, queued}
end
if wait_ttl > 0 then
  redis.call('ZADD', KEYS[2], 'NX', tonumber(t[1]) * 1000000 + tonumber(t[2]), ARGV[1])
  redis.call('ZADD', KEYS[3], now + wait_ttl, ARGV[1])
  redis.call('PEXPIRE', KEYS[2], wait_ttl * 2)
  redis.call('PEXPIRE', KEYS[3], wait_ttl * 2)
  queued = redis.call('ZCARD', KEYS[2])
end
return {0, used, queued}
